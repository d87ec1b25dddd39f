import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { uniq } from './helpers/factories';
import { freePort, ServiceProcess } from './helpers/process';
import { TcpProxy } from './helpers/tcp-proxy';
import { openResumed, openSocket, ZERO, type TestSocket } from './helpers/ws';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One messenger-api process of the test, and a small JSON client for it. */
interface Web {
  proc: ServiceProcess;
  port: number;
  api<T = Record<string, unknown>>(method: string, path: string, body?: object, session?: string): Promise<{ status: number; body: T }>;
}

async function startWeb(extra: Record<string, string> = {}): Promise<Web> {
  const port = await freePort();
  // No search (no queue needed) and no throttling (the bursts post far past RPS_LIMIT).
  const proc = new ServiceProcess('messenger/main.ts', testEnv({ PORT: String(port), LOG_LEVEL: 'info', APPS: 'auth,chats,messages,realtime', WS_PING_MS: '1000', ...extra }));
  await proc.waitFor((l) => l.msg === 'messenger-api listening');
  return {
    proc,
    port,
    async api(method, path, body, session) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers: { 'content-type': 'application/json', ...(session === undefined ? {} : { authorization: `session_id ${session}` }) },
      });
      return { status: res.status, body: (await res.json()) as never };
    },
  };
}

interface Account {
  session: string;
  userName: string;
  password: string;
}

async function account(web: Web): Promise<Account> {
  const userName = uniq('user');
  const password = 'correct horse battery';
  assert.equal((await web.api('POST', '/v1/auth/register', { user_name: userName, password })).status, 201);
  const res = await web.api<{ session_id: string }>('POST', '/v1/auth/login', { user_name: userName, password });
  return { session: res.body.session_id, userName, password };
}

/** Every message id of a chat, in page order. */
async function pageIds(web: Web, chatId: string, session: string): Promise<string[]> {
  const out: string[] = [];
  let from = ZERO;
  for (;;) {
    const res = await web.api<{ messages: { message_id: string }[]; next: { iterator: string } }>('GET', `/v1/chats/${chatId}/messages?limit=1000&from=${from}`, undefined, session);
    assert.equal(res.status, 200);
    if (res.body.messages.length === 0) return out;
    out.push(...res.body.messages.map((m) => m.message_id));
    from = res.body.next.iterator;
  }
}

/**
 * Posts `n` messages round-robin through `webs`, `concurrency` at a time;
 * failures (a killed process, Redis away) are counted, not thrown, or with
 * `retryMs` retried (as a client would) for up to that long.
 */
async function burst(webs: Web[], chatId: string, userId: string, session: string, n: number, concurrency = 20, retryMs = 0): Promise<{ ok: number; failed: number }> {
  let i = 0;
  let ok = 0;
  let failed = 0;
  const worker = async () => {
    while (i < n) {
      const k = i++;
      const web = webs[k % webs.length];
      const until = Date.now() + retryMs;
      for (;;) {
        let status: number;
        try {
          status = (await web.api('POST', `/v1/chats/${chatId}/messages?user_id=${userId}`, { message: `burst ${k}` }, session)).status;
        } catch {
          status = 0;
        }
        if (status === 201) ok++;
        else if (Date.now() < until) {
          await sleep(100);
          continue;
        } else failed++;
        break;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ok, failed };
}

/** Ids of the message frames of one chat on these sockets, in arrival order. */
function received(sockets: TestSocket[], chatId: string): string[] {
  return sockets.flatMap((s) => s.of('message').filter((f) => f.chat_id === chatId).map((f) => f.message_id as string));
}

if (MODE === 'services') {
  describe('real time across web processes on one Redis and PostgreSQL (services mode)', function () {
    this.timeout(120_000);
    const procs: ServiceProcess[] = [];
    const sockets: TestSocket[] = [];
    let a: Web;
    let b: Web;

    const track = (s: TestSocket) => {
      sockets.push(s);
      return s;
    };

    /** A chat with two members (owner on `a`), ready for messages. */
    async function chatOf(owner: Account, other: Account): Promise<{ chatId: string; ownerId: string; otherId: string }> {
      const chatId = (await a.api<{ chat_id: string }>('POST', '/v1/chats', { chat_name: uniq('chat') }, owner.session)).body.chat_id;
      const ownerId = (await a.api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('o') }, owner.session)).body.user_id;
      const otherId = (await b.api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('m') }, other.session)).body.user_id;
      return { chatId, ownerId, otherId };
    }

    before(async () => {
      [a, b] = await Promise.all([startWeb(), startWeb()]);
      procs.push(a.proc, b.proc);
    });

    afterEach(async () => {
      for (const s of sockets.splice(0)) if (s.closeCode === undefined) await s.close();
    });

    after(async () => {
      for (const p of procs) {
        p.kill();
        await p.exited;
      }
    });

    it('a socket on each instance receives, in order, the messages posted through the other', async () => {
      const alice = await account(a);
      const bob = await account(b);
      const { chatId, ownerId, otherId } = await chatOf(alice, bob);
      const onA = track(await openSocket(a.port, { session: bob.session }));
      const onB = track(await openSocket(b.port, { session: alice.session }));
      await sleep(300);
      const want: string[] = [];
      for (let i = 0; i < 20; i++) {
        // Alternating: alice posts through B's peer A, bob through A's peer B.
        const [web, uid, s] = i % 2 === 0 ? [a, ownerId, alice.session] : [b, otherId, bob.session];
        const res = await web.api<{ message_id: string }>('POST', `/v1/chats/${chatId}/messages?user_id=${uid}`, { message: `x${i}` }, s);
        assert.equal(res.status, 201);
        want.push(`x${i}`);
      }
      for (const s of [onA, onB]) await s.until('20 messages', () => s.texts(chatId).length === 20);
      assert.deepEqual(onA.texts(chatId), want);
      assert.deepEqual(onB.texts(chatId), want);
    });

    it('two tabs of one account on different instances both get every message; logout on one instance closes both with 4401', async () => {
      const alice = await account(a);
      const bob = await account(b);
      const { chatId, otherId } = await chatOf(alice, bob);
      const tabA = track(await openSocket(a.port, { session: alice.session }));
      const tabB = track(await openSocket(b.port, { session: alice.session }));
      await sleep(300);
      assert.equal((await b.api('POST', `/v1/chats/${chatId}/messages?user_id=${otherId}`, { message: 'to both tabs' }, bob.session)).status, 201);
      for (const s of [tabA, tabB]) await s.until('the message', () => s.texts(chatId).includes('to both tabs'));
      const started = Date.now();
      assert.equal((await a.api('POST', '/v1/auth/logout', undefined, alice.session)).status, 200);
      assert.equal(await tabA.closed, 4401);
      assert.equal(await tabB.closed, 4401);
      assert.ok(Date.now() - started < 1000, `closed after ${Date.now() - started} ms`);
    });

    it('kill -9 of a web process mid-burst: reconnecting to the other and resuming misses nothing', async () => {
      const victim = await startWeb();
      procs.push(victim.proc);
      const alice = await account(b);
      const bob = await account(b);
      const { chatId, ownerId } = await chatOf(alice, bob);
      const first = track(await openResumed(victim.port, bob.session, { [chatId]: ZERO }));
      await sleep(200);
      const posting = burst([b, victim], chatId, ownerId, alice.session, 1000);
      await first.until('a share of the burst', () => first.texts(chatId).length >= 150, 60_000);
      victim.proc.kill();
      await first.closed;
      const seen = received([first], chatId);
      const second = track(await openResumed(b.port, bob.session, { [chatId]: seen[seen.length - 1] }));
      const result = await posting;
      assert.ok(result.ok >= 500, `only ${result.ok} posts stored`);
      const want = await pageIds(b, chatId, bob.session);
      await second.until('every stored message', () => seen.length + received([second], chatId).length >= want.length, 30_000);
      await sleep(300);
      assert.deepEqual([...seen, ...received([second], chatId)], want);
    });

    /**
     * Alice watching on instance b, in a chat with Carol, whose only tab is on
     * a second instance (the victim) and who has just been told online. The
     * victim's marks live 6 s (PRESENCE_TTL_SECONDS; 45 by default), so what
     * waits for them to expire takes seconds, not a minute.
     */
    async function carolOnVictim() {
      const victim = await startWeb({ PRESENCE_TTL_SECONDS: '6' });
      procs.push(victim.proc);
      const alice = await account(b);
      const carol = await account(b);
      const { chatId, otherId: carolId } = await chatOf(alice, carol);
      const watcher = track(await openResumed(b.port, alice.session, {}));
      await sleep(200);
      const tab = track(await openResumed(victim.port, carol.session, {}));
      await watcher.next((f) => f.type === 'presence' && f.user_id === carolId && f.online === true);
      const members = async () => (await b.api<{ users: { user_id: string; online: boolean }[] }>('GET', `/v1/chats/${chatId}/users`, undefined, alice.session)).body.users;
      return { victim, carolId, watcher, tab, members };
    }

    // SPEC: `online` turns false within 60 s after the account's instance
    // died. Until 2026-12-07 the members list did (the marks expire after
    // 45 s), but no instance ever sent the `offline` frame: an open tab kept
    // showing the account online.
    it('kill -9 of the instance holding an account\'s only tab: the other instance\'s tabs are told it is offline within 60 s', async function () {
      this.timeout(120_000);
      const { victim, carolId, watcher, members } = await carolOnVictim();
      assert.equal((await members()).find((u) => u.user_id === carolId)?.online, true);
      victim.proc.kill();
      await victim.proc.exited;
      const offline = await Promise.race([
        watcher.next((f) => f.type === 'presence' && f.user_id === carolId && f.online === false, 60_000).then(() => true),
        sleep(60_000).then(() => false),
      ]);
      assert.ok(offline, `no offline frame 60 s after the kill: ${JSON.stringify(watcher.of('presence'))}`);
      assert.equal((await members()).find((u) => u.user_id === carolId)?.online, false);
      // Said once (one instance takes the expired account), and the last frame is what holds.
      await sleep(6000);
      assert.deepEqual(watcher.of('presence').filter((f) => f.user_id === carolId).map((f) => f.online), [true, false]);
    });

    // An instance whose event loop stalls past the marks' TTL (45 s) is
    // taken for dead: another instance's sweep announces its accounts
    // offline. Until 2026-12-07, when it came back, its renewal marked them
    // again silently: the members list said online, the open tabs kept the
    // `offline` frame until reloaded.
    it('an instance stalled past the presence TTL (SIGSTOP): its account is announced offline, and online again once it runs (SIGCONT)', async function () {
      this.timeout(150_000);
      const { victim, carolId, watcher, tab, members } = await carolOnVictim();
      const carolOf = (s: TestSocket) => s.of('presence').filter((f) => f.user_id === carolId).map((f) => f.online);
      victim.proc.child.kill('SIGSTOP');
      try {
        await watcher.next((f) => f.type === 'presence' && f.user_id === carolId && f.online === false, 70_000);
        assert.equal((await members()).find((u) => u.user_id === carolId)?.online, false);
      } finally {
        victim.proc.child.kill('SIGCONT');
      }
      await watcher.until('carol online again', () => carolOf(watcher).length >= 3, 30_000);
      assert.deepEqual(carolOf(watcher), [true, false, true]);
      assert.equal((await members()).find((u) => u.user_id === carolId)?.online, true);
      assert.equal(tab.closeCode, undefined);
      // And her tab closing now is told as usual.
      await tab.close();
      await watcher.until('carol offline', () => carolOf(watcher).length >= 4, 10_000);
      assert.deepEqual(carolOf(watcher), [true, false, true, false]);
      victim.proc.kill();
      await victim.proc.exited;
    });

    // Until 2026-12-07 the other side's tabs got only their own member frame
    // of a new direct chat: the caller's join was announced first, when the
    // other account was not indexed under the chat on any instance yet.
    it('a new direct chat reaches the open tabs of both sides on every instance, each with both members', async () => {
      const settings = { APPS: 'auth,chats,messages,realtime,conversations' };
      const [c, d] = await Promise.all([startWeb(settings), startWeb(settings)]);
      procs.push(c.proc, d.proc);
      try {
        const alice = await account(c);
        const bob = await account(c);
        const tabs: [string, TestSocket][] = [];
        for (const [who, acc] of [['alice', alice], ['bob', bob]] as const) {
          for (const web of [c, d]) tabs.push([`${who} on ${web.port}`, track(await openResumed(web.port, acc.session, {}))]);
        }
        await sleep(300);
        const res = await c.api<{ chat_id: string; user_id: string }>('POST', '/v1/direct', { user_name: bob.userName }, alice.session);
        assert.equal(res.status, 201);
        const chatId = res.body.chat_id;
        const users = (await d.api<{ users: { user_id: string; user_name: string }[] }>('GET', `/v1/chats/${chatId}/users`, undefined, bob.session)).body.users;
        assert.equal(users.length, 2);
        const want = users.map((u) => `${u.user_id} ${u.user_name}`).sort();
        const members = (s: TestSocket) => s.of('member').filter((f) => f.chat_id === chatId).map((f) => `${String(f.user_id)} ${String(f.user_name)}`).sort();
        for (const [name, s] of tabs) {
          await s.until(`both members on ${name}`, () => members(s).length >= 2, 5000).catch(() => undefined);
        }
        await sleep(200);
        for (const [name, s] of tabs) assert.deepEqual(members(s), want, name);
        // And the chat's messages reach them all.
        const sent = await d.api('POST', `/v1/chats/${chatId}/messages?user_id=${res.body.user_id}`, { message: 'hi bob' }, alice.session);
        assert.equal(sent.status, 201);
        for (const [name, s] of tabs) await s.until(`the message on ${name}`, () => s.texts(chatId).includes('hi bob'));
      } finally {
        c.proc.kill();
        d.proc.kill();
        await Promise.all([c.proc.exited, d.proc.exited]);
      }
    });

    // A post moves the poster's read marker; its `read` must not overtake its
    // `message` on any connection, on either instance (until 2026-12-07 a
    // connection holding its messages, before its first frame or while it
    // read the database, was sent the `read` at once).
    for (const mode of ['db_direct', 'rabbitmq'] as const) {
      it(`MESSAGE_STORAGE_TYPE=${mode}: each of the poster's connections, on both instances, gets a message before the read it moved`, async () => {
        const queue = `${testEnv().SEARCH_QUEUE}.sync.${randomBytes(3).toString('hex')}`;
        const settings = { APPS: 'auth,chats,messages,realtime,conversations', MESSAGE_STORAGE_TYPE: mode, SYNC_QUEUE: queue, SYNC_FLUSH_MS: '20' };
        // One synchronizer (in the first process) in the write-behind mode.
        const [c, d] = await Promise.all([startWeb({ ...settings, SYNC_IN_PROCESS: '1' }), startWeb({ ...settings, SYNC_IN_PROCESS: '0' })]);
        procs.push(c.proc, d.proc);
        try {
          const alice = await account(c);
          const bob = await account(d);
          const chatId = (await c.api<{ chat_id: string }>('POST', '/v1/chats', { chat_name: uniq('chat') }, alice.session)).body.chat_id;
          const aliceId = (await c.api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('o') }, alice.session)).body.user_id;
          assert.equal((await d.api('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('m') }, bob.session)).status, 201);
          const tabs: [string, TestSocket][] = [];
          for (const web of [c, d]) {
            const flowing = track(await openResumed(web.port, alice.session, {}));
            flowing.sendJson({ type: 'probe' });
            await flowing.next((f) => f.type === 'error');
            const resumed = track(await openResumed(web.port, alice.session, { [chatId]: ZERO }));
            // Sends no frame: its messages are held for up to 0.5 s.
            const silent = track(await openSocket(web.port, { session: alice.session }));
            tabs.push([`flowing on ${web.port}`, flowing], [`resumed on ${web.port}`, resumed], [`silent on ${web.port}`, silent]);
          }
          await sleep(50);
          const ids: string[] = [];
          for (let i = 0; i < 3; i++) {
            const res = await c.api<{ message_id: string }>('POST', `/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: `moves ${i}` }, alice.session);
            assert.equal(res.status, 201);
            ids.push(res.body.message_id);
          }
          for (const [, s] of tabs) await s.until('the last read', () => s.of('read').some((f) => f.message_id === ids[2]));
          await sleep(100);
          for (const [name, s] of tabs) {
            const seen = s.frames.filter((f) => f.type === 'message' || f.type === 'read').map((f) => `${f.type} ${String(f.message_id)}`);
            for (const r of s.of('read')) {
              const read = seen.indexOf(`read ${String(r.message_id)}`);
              const message = seen.indexOf(`message ${String(r.message_id)}`);
              assert.ok(message >= 0 && message < read, `${name}: read before its message: ${seen.join(', ')}`);
            }
            assert.deepEqual(s.of('message').map((f) => f.message_id), ids, `${name}: messages`);
          }
        } finally {
          c.proc.kill();
          d.proc.kill();
          await Promise.all([c.proc.exited, d.proc.exited]);
          if (mode === 'rabbitmq') await deleteQueues(queue);
        }
      });
    }

    // Until 2026-12-07 an instance whose Redis subscription was cut and came
    // back kept its sockets open: what was published meanwhile never reached
    // them, and nothing told them to resume (a chat that stayed quiet kept its
    // gap; joins, read markers and presence changes were gone for good).
    it('an instance whose Redis connection is cut and comes back closes its sockets with 1013; their resume brings what was posted meanwhile', async () => {
      const url = new URL(testEnv().REDIS_URL);
      const proxy = new TcpProxy(url.hostname, Number(url.port || 6379));
      const proxyPort = await proxy.up();
      const c = await startWeb({ REDIS_URL: `redis://127.0.0.1:${proxyPort}` });
      procs.push(c.proc);
      try {
        const alice = await account(b);
        const bob = await account(b);
        const { chatId, ownerId } = await chatOf(alice, bob);
        const onC = track(await openResumed(c.port, bob.session, { [chatId]: ZERO }));
        const onB = track(await openResumed(b.port, bob.session, { [chatId]: ZERO }));
        const posted: string[] = [];
        const post = async (text: string) => {
          const res = await b.api<{ message_id: string }>('POST', `/v1/chats/${chatId}/messages?user_id=${ownerId}`, { message: text }, alice.session);
          assert.equal(res.status, 201);
          posted.push(res.body.message_id);
        };
        await post('before');
        for (const s of [onC, onB]) await s.until('the first message', () => s.texts(chatId).length === 1);
        // Instance c alone loses Redis; b goes on publishing.
        await proxy.down();
        await c.proc.waitFor((l) => l.msg === 'redis pub/sub connection error' && l.connection === 'subscribe');
        await post('while c was cut 1');
        await post('while c was cut 2');
        await onB.until('the messages of the outage', () => onB.texts(chatId).length === 3);
        await proxy.up();
        assert.equal(await Promise.race([onC.closed, sleep(20_000).then(() => 'still open')]), 1013, `frames: ${onC.texts(chatId).join(', ')}`);
        assert.equal(onC.closeReason, 'events-lost');
        const seen = received([onC], chatId);
        const again = track(await openResumed(c.port, bob.session, { [chatId]: seen[seen.length - 1] }));
        await again.until('what was missed', () => seen.length + received([again], chatId).length >= posted.length);
        await post('after');
        await again.until('the next live one', () => again.texts(chatId).includes('after'));
        assert.deepEqual([...seen, ...received([again], chatId)], posted);
        // The instance that lost nothing kept its socket, with every message once.
        assert.equal(onB.closeCode, undefined);
        await onB.until('the last message', () => onB.texts(chatId).length === 4);
        assert.deepEqual(received([onB], chatId), posted);
      } finally {
        c.proc.kill();
        await c.proc.exited;
        await proxy.down();
      }
    });

    // Until 2026-12-07 the sockets an instance closed because its
    // subscription had a gap (1013 events-lost) left as if their users had
    // gone: every account with no tab elsewhere was announced offline, then
    // online again a moment later when its client reconnected, on every
    // instance, for every account at once.
    it('sockets closed with 1013 events-lost keep their accounts online: a client that reconnects causes no offline/online blink, one that does not is offline within 60 s', async function () {
      this.timeout(120_000);
      const url = new URL(testEnv().REDIS_URL);
      const proxy = new TcpProxy(url.hostname, Number(url.port || 6379));
      const proxyPort = await proxy.up();
      // Marks of 15 s (45 by default): longer than the Redis outage below, so alice's survive it.
      const c = await startWeb({ REDIS_URL: `redis://127.0.0.1:${proxyPort}`, PRESENCE_TTL_SECONDS: '15' });
      procs.push(c.proc);
      try {
        const bob = await account(b);
        const alice = await account(b);
        const carol = await account(b);
        const { chatId, otherId: aliceId } = await chatOf(bob, alice);
        const carolId = (await b.api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('c') }, carol.session)).body.user_id;
        const watcher = track(await openResumed(b.port, bob.session, {}));
        watcher.sendJson({ type: 'probe' });
        await watcher.next((f) => f.type === 'error');
        const tabs = [track(await openResumed(c.port, alice.session, {})), track(await openResumed(c.port, carol.session, {}))];
        const said = (id: string) => watcher.of('presence').filter((f) => f.user_id === id).map((f) => f.online);
        await watcher.until('both online', () => said(aliceId).length === 1 && said(carolId).length === 1);
        await proxy.down();
        await c.proc.waitFor((l) => l.msg === 'redis pub/sub connection error' && l.connection === 'subscribe');
        await proxy.up();
        for (const s of tabs) {
          assert.equal(await Promise.race([s.closed, sleep(20_000).then(() => 'still open')]), 1013);
          assert.equal(s.closeReason, 'events-lost');
        }
        // Alice's client reconnects (to the same instance); carol's does not.
        const again = track(await openResumed(c.port, alice.session, {}));
        again.sendJson({ type: 'probe' });
        await again.next((f) => f.type === 'error');
        await watcher.until('carol offline', () => said(carolId).length >= 2, 60_000);
        assert.deepEqual(said(carolId), [true, false]);
        assert.deepEqual(said(aliceId), [true], 'alice blinked');
        const members = (await b.api<{ users: { user_id: string; online: boolean }[] }>('GET', `/v1/chats/${chatId}/users`, undefined, bob.session)).body.users;
        assert.equal(members.find((u) => u.user_id === aliceId)?.online, true);
        assert.equal(members.find((u) => u.user_id === carolId)?.online, false);
        // A close by the client is told at once, as ever.
        await again.close();
        await watcher.until('alice offline', () => said(aliceId).length >= 2, 10_000);
        assert.deepEqual(said(aliceId), [true, false]);
      } finally {
        c.proc.kill();
        await c.proc.exited;
        await proxy.down();
      }
    });

    /**
     * An instance `c` whose Redis goes through a proxy, a chat of alice and
     * bob, and bob's tabs on `c` and `b` that have seen one message posted
     * through `c` (so its publishing connection is known to the proxy).
     */
    async function publisherSetUp(extra: Record<string, string> = {}) {
      const url = new URL(testEnv().REDIS_URL);
      const proxy = new TcpProxy(url.hostname, Number(url.port || 6379));
      const proxyPort = await proxy.up();
      const c = await startWeb({ REDIS_URL: `redis://127.0.0.1:${proxyPort}`, ...extra });
      procs.push(c.proc);
      const alice = await account(b);
      const bob = await account(b);
      const { chatId, ownerId } = await chatOf(alice, bob);
      const tabs = [track(await openResumed(c.port, bob.session, { [chatId]: ZERO })), track(await openResumed(b.port, bob.session, { [chatId]: ZERO }))];
      const post = async (text: string) => {
        const res = await c.api<{ message_id: string }>('POST', `/v1/chats/${chatId}/messages?user_id=${ownerId}`, { message: text }, alice.session);
        assert.equal(res.status, 201);
        return res.body.message_id;
      };
      await post('before');
      for (const s of tabs) await s.until('the first message', () => s.texts(chatId).length === 1);
      /** Cuts c's publishing connection alone (its subscription and key-value connections stay up) and keeps it from coming back. */
      const cutPublisher = async () => {
        proxy.refuseNew = true;
        assert.equal(proxy.cutWhereSent('publish'), 1);
        await c.proc.waitFor((l) => l.msg === 'redis pub/sub connection error' && l.connection === 'publish');
      };
      return { proxy, c, alice, bob, chatId, tabs, post, cutPublisher };
    }

    // Until 2026-12-07 a flush whose PUBLISH failed (the publishing
    // connection of its instance cut, the subscriptions of every instance
    // up) was dropped: no instance ever got its events and none knew, so a
    // quiet chat's last message, a join, a read marker never reached any tab.
    it('events whose PUBLISH failed while every subscription stayed up reach the tabs on every instance once publishing works again', async () => {
      const { proxy, c, chatId, tabs, post, cutPublisher } = await publisherSetUp();
      try {
        await cutPublisher();
        const lost = await post('published while the connection was cut');
        const carol = await account(b);
        const join = await c.api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('late') }, carol.session);
        assert.equal(join.status, 201);
        proxy.refuseNew = false;
        for (const s of tabs) {
          await s.until('the message and the join, or a close', () => s.closeCode !== undefined || (s.texts(chatId).length === 2 && s.of('member').some((f) => f.user_id === join.body.user_id)), 20_000);
          assert.equal(s.closeCode, undefined, `closed ${s.closeCode} ${s.closeReason}`);
          assert.deepEqual(s.of('message').map((f) => f.message_id).slice(1), [lost]);
        }
        // And what follows comes once, in order.
        const after = await post('after');
        for (const s of tabs) await s.until('the next one', () => s.texts(chatId).includes('after'));
        for (const s of tabs) assert.deepEqual(s.of('message').map((f) => f.message_id).slice(1), [lost, after]);
      } finally {
        c.proc.kill();
        await c.proc.exited;
        await proxy.down();
      }
    });

    it('more unpublished events than an instance keeps: once publishing works again every instance closes its tabs with 1013 events-lost, and resume brings the rest', async () => {
      // 9 posts of 1 MB of JSON each pass what an instance keeps for a later PUBLISH (8 MiB).
      const { proxy, c, bob, chatId, tabs, post, cutPublisher } = await publisherSetUp({ MESSAGE_MAX_LENGTH: '1000000' });
      try {
        await cutPublisher();
        const big = 'x'.repeat(1_000_000);
        const ids: string[] = [];
        for (let i = 0; i < 9; i++) ids.push(await post(`${i} ${big}`.slice(0, 1_000_000)));
        proxy.refuseNew = false;
        for (const s of tabs) {
          assert.equal(await Promise.race([s.closed, sleep(20_000).then(() => 'still open')]), 1013, `messages: ${s.of('message').length}`);
          assert.equal(s.closeReason, 'events-lost');
        }
        const seen = tabs[1].of('message').map((f) => f.message_id as string);
        const again = track(await openResumed(b.port, bob.session, { [chatId]: seen[seen.length - 1] }));
        await again.until('what was missed', () => again.of('message').length >= ids.length - (seen.length - 1));
        assert.deepEqual([...seen, ...again.of('message').map((f) => f.message_id as string)].slice(1), ids);
      } finally {
        c.proc.kill();
        await c.proc.exited;
        await proxy.down();
      }
    });

    it('Redis restarted mid-burst: after resume nothing is missing, nothing repeated', async function () {
      const redisPort = await freePort();
      let redis: ChildProcess | undefined;
      const startRedis = async () => {
        redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
        await sleep(300);
      };
      await startRedis();
      const extra = { REDIS_URL: `redis://127.0.0.1:${redisPort}` };
      const [c, d] = await Promise.all([startWeb(extra), startWeb(extra)]);
      procs.push(c.proc, d.proc);
      try {
        const alice = await account(d);
        const bob = await account(d);
        const chatId = (await c.api<{ chat_id: string }>('POST', '/v1/chats', { chat_name: uniq('chat') }, alice.session)).body.chat_id;
        const aliceId = (await c.api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('o') }, alice.session)).body.user_id;
        assert.equal((await d.api('POST', `/v1/chats/${chatId}/users`, { user_name: uniq('m') }, bob.session)).status, 201);
        const live = track(await openResumed(c.port, bob.session, { [chatId]: ZERO }));
        await sleep(200);
        const posting = burst([d], chatId, aliceId, alice.session, 1000, 10, 15_000);
        await live.until('a share of the burst', () => live.texts(chatId).length >= 150, 60_000);
        redis?.kill('SIGKILL');
        await sleep(700);
        await startRedis();
        const result = await posting;
        assert.ok(result.ok >= 900, `only ${result.ok} posts stored`);
        // A few more once Redis is back: the live socket repairs its gap on them.
        for (let i = 0; i < 3; i++) {
          for (let t = 0; t < 50; t++) {
            const r = await d.api('POST', `/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: `after ${i}` }, alice.session);
            if (r.status === 201) break;
            await sleep(200);
          }
        }
        const want = await pageIds(d, chatId, alice.session);
        await live.close();
        const seen = received([live], chatId);
        const again = track(await openResumed(d.port, bob.session, { [chatId]: seen.length === 0 ? ZERO : seen[seen.length - 1] }));
        await again.until('the rest', () => seen.length + received([again], chatId).length >= want.length, 30_000);
        await sleep(300);
        assert.deepEqual([...seen, ...received([again], chatId)], want);
      } finally {
        redis?.kill('SIGKILL');
      }
    });
  });
}
