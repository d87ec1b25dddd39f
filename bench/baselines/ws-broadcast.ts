/**
 * The real-time baseline: the least a fan-out across instances can do, with
 * no database, authentication or ordering. ROLE=pub answers POST with 201
 * after publishing a message frame to a Redis channel; ROLE=sub broadcasts
 * every frame on that channel to all its WebSocket clients (bare `ws`).
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.PORT);
const channel = process.env.CHANNEL ?? 'bench:ws-baseline';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

if (process.env.ROLE === 'pub') {
  const redis = new Redis(redisUrl);
  http
    .createServer((req, res) => {
      if (req.method !== 'POST') {
        res.writeHead(200);
        res.end('{}');
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const { message } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { message: string };
        const id = randomUUID().replace(/-/g, '');
        const frame = JSON.stringify({ type: 'message', chat_id: id, message_id: id, user_id: id, user_name: 'bench', text: message, created_at: new Date().toISOString() });
        void redis.publish(channel, frame).then(() => {
          res.writeHead(201, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ message_id: id }));
        });
      });
    })
    .listen(port, '127.0.0.1');
} else {
  const sub = new Redis(redisUrl);
  const clients = new Set<WebSocket>();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });
  const server = http.createServer((_req, res) => {
    res.writeHead(200);
    res.end('{}');
  });
  server.on('upgrade', (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      clients.add(ws);
      ws.on('close', () => clients.delete(ws));
    }),
  );
  server.listen(port, '127.0.0.1');
  sub.on('message', (_c: string, frame: string) => {
    for (const ws of clients) ws.send(frame);
  });
  void sub.subscribe(channel);
}
