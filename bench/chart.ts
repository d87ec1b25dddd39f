/** One API scenario's throughput beside its baseline. */
export interface Bar {
  label: string;
  app: number;
  baseline: number;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A horizontal bar chart (SVG) of each scenario's req/s as a share of its baseline, with the 50% target line. */
export function renderChart(bars: Bar[]): string {
  const rowH = 34;
  const left = 250;
  const width = 760;
  const plot = width - left - 90;
  const height = 50 + bars.length * rowH + 30;
  const x = (ratio: number) => left + Math.min(ratio, 1.2) / 1.2 * plot;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">Throughput as a share of a bare node:http server doing the same work</text>`,
  ];
  bars.forEach((b, i) => {
    const y = 40 + i * rowH;
    const ratio = b.baseline > 0 ? b.app / b.baseline : 0;
    parts.push(`<text x="10" y="${y + 16}">${esc(b.label)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 4}" width="${x(1) - left}" height="18" fill="#e5e7eb"/>`);
    parts.push(`<rect x="${left}" y="${y + 4}" width="${Math.max(1, x(ratio) - left)}" height="18" fill="${ratio >= 0.5 ? '#2563eb' : '#dc2626'}"/>`);
    parts.push(`<text x="${x(Math.max(ratio, 1)) + 6}" y="${y + 17}">${Math.round(ratio * 100)}% (${Math.round(b.app).toLocaleString('en-US')} / ${Math.round(b.baseline).toLocaleString('en-US')})</text>`);
  });
  const t = x(0.5);
  const bottom = 40 + bars.length * rowH;
  parts.push(`<line x1="${t}" y1="34" x2="${t}" y2="${bottom}" stroke="#111" stroke-dasharray="4 3"/>`);
  parts.push(`<text x="${t - 30}" y="${bottom + 16}">target 50%</text>`);
  parts.push(`<text x="${x(1) - 30}" y="${bottom + 16}">baseline</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
