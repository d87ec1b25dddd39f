/**
 * Raw bcryptjs compare rate at a given cost on N threads: the ceiling for
 * POST /v1/auth/login. Usage: node --import tsx bench/baselines/bcrypt.ts <cost> <threads> <seconds>
 * Prints {"perSecond": n}.
 */
import { Worker } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

// Plain JavaScript, so the threads need no TypeScript loader.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require('bcryptjs');
(async () => {
  let n = 0;
  while (Date.now() < workerData.until) {
    await bcrypt.compare('correct horse battery', workerData.hash);
    n++;
  }
  parentPort.postMessage(n);
})();
`;

const [cost, threads, seconds] = process.argv.slice(2).map(Number);
const hash = bcrypt.hashSync('correct horse battery', cost);
const until = Date.now() + seconds * 1000;
const runs = Array.from({ length: threads }, () =>
  new Promise<number>((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { hash, until } });
    w.on('message', (n: number) => resolve(n));
    w.on('error', reject);
  }),
);
void Promise.all(runs).then((counts) => {
  process.stdout.write(`${JSON.stringify({ perSecond: counts.reduce((a, b) => a + b, 0) / seconds })}\n`);
});
