/**
 * Bare node:http servers doing the same work as one API operation, with the
 * same worker count, for the benchmark's baselines. Usage:
 *   node --import tsx bench/baselines/server.ts <ping|redis|page|chats|insert|batch-insert|publish> <port> <workers>
 * Settings come from BENCH_* environment variables set by bench/run.ts.
 */
import cluster from 'node:cluster';
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import pg from 'pg';
import { CHATS_OF_ACCOUNT_SQL, chatsOfAccountParams } from '../../messenger/db/chats';
import { INSERT_MESSAGE_SQL, insertMessageParams, PAGE_OF_CHAT_SQL, pageOfChatParams, STORE_BATCH } from '../../messenger/db/messages';

const [mode, portArg, workersArg] = process.argv.slice(2);
const port = Number(portArg);
const workers = Number(workersArg ?? '2');
const env = (name: string): string => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

function json(res: http.ServerResponse, status: number, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// The app's page query (messenger/db/messages.ts pageOfChat): access, cursor and page in one statement, the
// page as JSON text. The very exported statement, its knex placeholders numbered for pg. Both statements are
// named prepared statements, as in the app.
let pageParam = 0;
const PAGE_SQL = PAGE_OF_CHAT_SQL.replace(/\?/g, () => `$${++pageParam}`);
// The app's one-message insert (messenger/db/messages.ts insertMessage), the very exported statement.
let insertParam = 0;
const INSERT_SQL = INSERT_MESSAGE_SQL.replace(/\?/g, () => `$${++insertParam}`);

const hex = (uuid: string) => uuid.replace(/-/g, '');
const hexToUuid = (h: string | null) => (h === null ? undefined : `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`);

/** Reads a request body, then calls `fn` with it. */
function withBody(req: http.IncomingMessage, res: http.ServerResponse, fn: (body: string) => void): void {
  let body = '';
  req.on('data', (d: Buffer) => (body += d.toString()));
  // A GET (the bench asking whether the server is up) has no body: 200.
  req.on('end', () => (req.method === 'POST' ? fn(body) : json(res, 200, '{}')));
}

async function handlerFor(): Promise<http.RequestListener> {
  if (mode === 'ping') return (_req, res) => json(res, 200, '{}');
  if (mode === 'publish') {
    // The write-behind mode's bare work: one persistent message, answered once RabbitMQ confirmed it.
    const conn = await amqp.connect(env('BENCH_RMQ_URL'));
    const ch = await conn.createConfirmChannel();
    const queue = env('BENCH_QUEUE');
    await ch.assertQueue(queue, { durable: true });
    return (req, res) => {
      withBody(req, res, (body) => {
        const text = (JSON.parse(body) as { message: string }).message;
        const id = randomUUID();
        ch.sendToQueue(queue, Buffer.from(JSON.stringify({ id, text })), { persistent: true }, (err) =>
          err ? json(res, 503, '{}') : json(res, 201, JSON.stringify({ message_id: hex(id) })),
        );
      });
    };
  }
  if (mode === 'redis') {
    const redis = new Redis(env('BENCH_REDIS_URL'));
    const key = env('BENCH_REDIS_KEY');
    return (_req, res) => {
      // As the caching app reads a page: its bytes, sent as they are.
      redis.getBuffer(key).then((v) => json(res, 200, v ?? '{}'), () => json(res, 503, '{}'));
    };
  }
  const pool = new pg.Pool({ connectionString: env('BENCH_DATABASE_URL'), max: Number(process.env.BENCH_POOL ?? '10') });
  const chat = env('BENCH_CHAT');
  const account = env('BENCH_ACCOUNT');
  if (mode === 'page') {
    return (_req, res) => {
      (async () => {
        const r = await pool.query({ name: 'page-of-chat', text: PAGE_SQL, values: pageOfChatParams(chat, account, null, 100) });
        const row = r.rows[0] as { allowed: boolean; messages: string; last_id: string | null } | undefined;
        if (!row?.allowed) return json(res, 404, '{}');
        json(res, 200, `{"messages":${row.messages},"next":{"iterator":"${row.last_id === null ? '0'.repeat(32) : hex(row.last_id)}"}}`);
      })().catch(() => json(res, 503, '{}'));
    };
  }
  if (mode === 'chats') {
    // The app's chat list (messenger/db/chats.ts chatListJson): the very exported statement, its knex
    // placeholders numbered for pg, the same parameters (chatsOfAccountParams, limit 100), named
    // prepared statement as in the app; the statement answers the items as JSON text, sent as the app sends it.
    let n = 0;
    const sql = CHATS_OF_ACCOUNT_SQL.replace(/\?/g, () => `$${++n}`);
    const lister = env('BENCH_LIST_ACCOUNT');
    return (_req, res) => {
      pool.query({ name: 'chats-of-account', text: sql, values: chatsOfAccountParams(lister, 100) }).then((r) => {
        json(res, 200, `{"chats":${(r.rows[0] as { chats: string }).chats}}`);
      }, () => json(res, 503, '{}'));
    };
  }
  if (mode === 'insert') {
    const member = env('BENCH_MEMBER');
    return (req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const text = (JSON.parse(body) as { message: string }).message;
        // ?chat=&member= picks another chat (the bench's writers spread over chats).
        const q = new URL(req.url ?? '/', 'http://localhost').searchParams;
        const values = insertMessageParams(hexToUuid(q.get('chat')) ?? chat, hexToUuid(q.get('member')) ?? member, account, text);
        pool.query({ name: 'insert-message', text: INSERT_SQL, values }).then(
          (r) => json(res, 201, JSON.stringify({ message_id: hex(r.rows[0].id) })),
          () => json(res, 503, '{}'),
        );
      });
    };
  }
  if (mode === 'batch-insert') {
    // Group commit, bare: posts that arrive while a statement runs wait and go into the next one,
    // the very statement of messenger/db/messages.ts storeBatch.
    const member = env('BENCH_MEMBER');
    const sql = STORE_BATCH.replace('?::json', '$1::json');
    let waiting: { item: object; done: (ok: boolean) => void }[] = [];
    let running = false;
    const kick = () => {
      if (running || waiting.length === 0) return;
      running = true;
      const batch = waiting;
      waiting = [];
      const input = batch.map((b, o) => ({ o, ...b.item }));
      pool.query({ name: 'store-batch', text: sql, values: [JSON.stringify(input)] }).then(
        () => batch.forEach((b) => b.done(true)),
        () => batch.forEach((b) => b.done(false)),
      ).finally(() => {
        running = false;
        kick();
      });
    };
    return (req, res) => {
      withBody(req, res, (body) => {
        const text = (JSON.parse(body) as { message: string }).message;
        const q = new URL(req.url ?? '/', 'http://localhost').searchParams;
        const id = randomUUID();
        const item = { id, chat_id: hexToUuid(q.get('chat')) ?? chat, member_id: hexToUuid(q.get('member')) ?? member, account_id: account, text, owner_id: null, key: null };
        waiting.push({ item, done: (ok) => (ok ? json(res, 201, JSON.stringify({ message_id: hex(id) })) : json(res, 503, '{}')) });
        kick();
      });
    };
  }
  throw new Error(`unknown mode ${mode}`);
}

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGKILL');
    process.exit(0);
  });
} else {
  void handlerFor().then((h) => http.createServer(h).listen(port, '127.0.0.1'));
}
