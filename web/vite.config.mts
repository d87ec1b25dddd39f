import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

// The client is built into dist/web, next to the compiled server, which serves it at `/`.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  plugins: [vue()],
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    assetsDir: 'assets',
    // No inline polyfill script and no inlined assets: the page's CSP allows only our own files.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    reportCompressedSize: true,
    target: 'es2020',
  },
  server: {
    // `npm run dev:web`: the API of `npm run dev` behind Vite's dev server.
    proxy: {
      '/v1': { target: 'http://127.0.0.1:8080', ws: true },
    },
  },
});
