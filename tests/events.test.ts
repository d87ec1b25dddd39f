import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EventBus, parseFlush, type MessageStored } from '../messenger/events';
import { createLogger } from '../messenger/infra/logger';
import { MemoryPubSub, RedisPubSub, type PubSub } from '../messenger/infra/pubsub';
import { appDirectories, loadAppModules } from '../messenger/apps/registry';
import { MODE, RUN_ID } from './helpers/env';
import { harness } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage } from './helpers/factories';

const log = createLogger('silent');
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A pub/sub adapter of the mode under test: Redis in the services mode, memory otherwise. */
function adapter(shared?: MemoryPubSub): PubSub {
  return MODE === 'services' ? new RedisPubSub(REDIS_URL, `test:${RUN_ID}:ev:`, log) : (shared ?? new MemoryPubSub());
}

function stored(text: string): MessageStored {
  return {
    chatId: 'a'.repeat(32), messageId: 'b'.repeat(32), userId: 'c'.repeat(32), userName: 'Ann',
    accountId: null, text, createdAt: new Date(0).toISOString(), seq: 1,
  };
}

/** Resolves with the first `n` values pushed, or fails after `ms`. */
function collect<T>(n: number, ms = 5000): { push: (v: T) => void; done: Promise<T[]> } {
  const got: T[] = [];
  let resolve: (v: T[]) => void = () => {};
  const done = new Promise<T[]>((res, rej) => {
    resolve = res;
    setTimeout(() => rej(new Error(`got ${got.length} of ${n} events within ${ms} ms`)), ms).unref();
  });
  return { push: (v) => { got.push(v); if (got.length === n) resolve(got); }, done };
}

describe(`domain events (${MODE === 'services' ? 'Redis pub/sub' : 'in-memory'} adapter)`, () => {
  const opened: PubSub[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((p) => p.close()));
  });

  /** Two buses as two instances would have them (one channel between them). */
  async function twoInstances(): Promise<[EventBus, EventBus]> {
    const shared = new MemoryPubSub();
    const a = adapter(shared);
    const b = MODE === 'services' ? adapter() : a;
    opened.push(a, ...(b === a ? [] : [b]));
    const buses: [EventBus, EventBus] = [new EventBus(a, log), new EventBus(b, log)];
    await Promise.all(buses.map((bus) => bus.start()));
    // Redis SUBSCRIBE is asynchronous: wait until a probe comes back to both.
    const probe = collect<MessageStored>(2);
    const undo = buses.map((bus) => bus.subscribe('message.stored', (e) => { if (e.text === 'probe') probe.push(e); }));
    const tick = setInterval(() => void buses[0].publish('message.stored', stored('probe')), 100);
    try {
      await probe.done;
    } finally {
      clearInterval(tick);
      undo.forEach((u) => u());
    }
    // Probes still in flight are told apart by their text, so nothing needs to settle.
    return buses;
  }

  /**
   * Waits until an end marker published by each bus after everything else has
   * reached every bus: with the order of one publisher kept, anything sent
   * before it (a duplicate included) has arrived by then.
   */
  async function drained(buses: EventBus[]): Promise<void> {
    const marks = collect<string>(buses.length * buses.length);
    const undo = buses.map((bus) => bus.subscribe('message.stored', (e) => { if (e.text.startsWith('end-marker')) marks.push(e.text); }));
    try {
      for (const [i, bus] of buses.entries()) await bus.publish('message.stored', stored(`end-marker ${i}`));
      await marks.done;
    } finally {
      undo.forEach((u) => u());
    }
  }
  const real = (texts: string[]) => texts.filter((t) => !t.includes('end-marker'));

  /** What `bus` sends on the pub/sub channel from now on, one string per message. */
  function publishedBy(bus: EventBus): string[] {
    const sent: string[] = [];
    const port = (bus as unknown as { pubsub: PubSub }).pubsub;
    const publish = port.publish.bind(port);
    port.publish = async (raw: string) => {
      sent.push(raw);
      await publish(raw);
    };
    return sent;
  }

  it('a subscriber on every instance gets each event once, with its payload intact', async () => {
    const [a, b] = await twoInstances();
    const onA = collect<MessageStored>(2);
    const onB = collect<MessageStored>(2);
    a.subscribe('message.stored', onA.push);
    b.subscribe('message.stored', onB.push);
    await a.publish('message.stored', stored('one'));
    await b.publish('message.stored', stored('two'));
    const [gotA, gotB] = await Promise.all([onA.done, onB.done]);
    await drained([a, b]);
    assert.equal(real(gotA.map((e) => e.text)).length, 2, 'no duplicates on instance A');
    assert.equal(real(gotB.map((e) => e.text)).length, 2, 'no duplicates on instance B');
    assert.deepEqual(real(gotA.map((e) => e.text)).sort(), ['one', 'two']);
    assert.deepEqual(real(gotB.map((e) => e.text)).sort(), ['one', 'two']);
    assert.deepEqual(gotA.find((e) => e.text === 'one'), stored('one'));
  });

  it('reactors run once, in the publishing process, before publish resolves', async () => {
    const [a, b] = await twoInstances();
    const ran: string[] = [];
    a.react('message.stored', async (list) => {
      await new Promise((r) => setTimeout(r, 20));
      ran.push(...list.map((e) => `a:${e.text}`));
    });
    b.react('message.stored', async (list) => { ran.push(...list.map((e) => `b:${e.text}`)); });
    await a.publish('message.stored', stored('x'));
    assert.deepEqual(ran, ['a:x']);
    await drained([a, b]);
    assert.deepEqual(real(ran), ['a:x'], 'no other instance reacts to it');
  });

  it('a failing reactor or subscriber is logged, never thrown at the publisher', async () => {
    const [a] = await twoInstances();
    a.react('member.joined', async () => { throw new Error('boom'); });
    const seen = collect<string>(1);
    a.subscribe('member.joined', () => { throw new Error('boom too'); });
    a.subscribe('member.joined', (e) => seen.push(e.userName));
    await a.publish('member.joined', { chatId: 'a'.repeat(32), userId: 'b'.repeat(32), userName: 'Bo', accountId: null });
    assert.deepEqual(await seen.done, ['Bo']);
  });

  it('an unsubscribed listener gets nothing more', async () => {
    const [a] = await twoInstances();
    const got: string[] = [];
    const undo = a.subscribe('read.moved', (e) => { got.push(e.messageId); });
    const first = collect<string>(1);
    const undoFirst = a.subscribe('read.moved', (e) => first.push(e.messageId));
    await a.publish('read.moved', { accountId: 'a'.repeat(32), chatId: 'b'.repeat(32), messageId: '1'.repeat(32), unread: 0, seq: 1 });
    await first.done;
    undoFirst();
    undo();
    await a.publish('read.moved', { accountId: 'a'.repeat(32), chatId: 'b'.repeat(32), messageId: '2'.repeat(32), unread: 0, seq: 1 });
    await drained([a]);
    assert.deepEqual(got, ['1'.repeat(32)]);
  });

  it('events published in one turn reach each reactor as one list and cross the channel as one message, in publish order', async () => {
    const [a, b] = await twoInstances();
    const sent = publishedBy(a);
    const lists: string[][] = [];
    a.react('message.stored', async (list) => { lists.push(list.map((e) => e.text)); });
    const onB = collect<string>(3);
    b.subscribe('message.stored', (e) => { if (e.text.startsWith('burst')) onB.push(e.text); });
    await Promise.all(['burst 1', 'burst 2', 'burst 3'].map((t) => a.publish('message.stored', stored(t))));
    assert.deepEqual(lists, [['burst 1', 'burst 2', 'burst 3']]);
    assert.equal(sent.length, 1, 'one pub/sub message for the three');
    assert.deepEqual(await onB.done, ['burst 1', 'burst 2', 'burst 3']);
    // Published in separate turns, they are separate flushes.
    await a.publish('message.stored', stored('later 1'));
    await a.publish('message.stored', stored('later 2'));
    assert.deepEqual(lists.slice(1), [['later 1'], ['later 2']]);
    assert.equal(sent.length, 3);
    await drained([a, b]);
  });

  it("a reactor's follow-up events join its flush: their reactors run before publish resolves, one message carries all, causes first", async () => {
    const [a, b] = await twoInstances();
    const sent = publishedBy(a);
    const reacted: string[] = [];
    a.react('message.stored', async (list, also) => {
      await new Promise((r) => setTimeout(r, 10));
      for (const e of list) also('read.moved', { accountId: 'a'.repeat(32), chatId: e.chatId, messageId: e.text.slice(-1).repeat(32), unread: 0, seq: 1 });
    });
    a.react('read.moved', async (list) => {
      await new Promise((r) => setTimeout(r, 10));
      reacted.push(...list.map((e) => e.messageId[0]));
    });
    const onB: string[] = [];
    const done = collect<string>(4);
    const mark = (s: string) => { onB.push(s); done.push(s); };
    b.subscribe('message.stored', (e) => { if (e.text.startsWith('follow')) mark(`stored ${e.text.slice(-1)}`); });
    b.subscribe('read.moved', (e) => mark(`read ${e.messageId[0]}`));
    await Promise.all(['follow 1', 'follow 2'].map((t) => a.publish('message.stored', stored(t))));
    assert.deepEqual(reacted, ['1', '2'], "the follow-ups' reactors ran before publish resolved");
    assert.equal(sent.length, 1, 'one pub/sub message for the posts and their follow-ups');
    assert.deepEqual(await done.done, ['stored 1', 'stored 2', 'read 1', 'read 2']);
    await drained([a, b]);
  });

  it('reactors that keep adding follow-ups are cut off: publish still resolves, what was added still goes out', async () => {
    const [a, b] = await twoInstances();
    let rounds = 0;
    a.react('read.moved', async (list, also) => {
      rounds++;
      also('read.moved', { ...list[0], unread: list[0].unread + 1 });
    });
    const unread: number[] = [];
    b.subscribe('read.moved', (e) => { if (e.chatId === 'f'.repeat(32)) unread.push(e.unread); });
    await a.publish('read.moved', { accountId: 'a'.repeat(32), chatId: 'f'.repeat(32), messageId: '1'.repeat(32), unread: 0, seq: 1 });
    assert.equal(rounds, 4, 'four rounds of reactions, then no more');
    await drained([a, b]);
    assert.deepEqual(unread, [0, 1, 2, 3, 4]);
  });

  it('a stored message through the API publishes message.stored with its place in the chat', async () => {
    const { client } = harness().app;
    const events = harness().infra.events;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session, 'Ann');
    const got = collect<MessageStored>(2);
    const undo = events.subscribe('message.stored', (e) => { if (e.chatId === chatId) got.push(e); });
    try {
      const first = await postMessage(client, chatId, userId, 'hello', u.session);
      const second = await postMessage(client, chatId, userId, 'again', u.session);
      const [e1, e2] = await got.done;
      assert.deepEqual(
        { ...e1, createdAt: undefined },
        { chatId, messageId: first, userId, userName: 'Ann', accountId: e1.accountId, text: 'hello', createdAt: undefined, seq: 1 },
      );
      assert.match(String(e1.accountId), /^[0-9a-f-]{32,36}$/);
      assert.equal(e2.messageId, second);
      assert.equal(e2.seq, 2);
      assert.ok(Date.parse(e2.createdAt) >= Date.parse(e1.createdAt));
    } finally {
      undo();
    }
  });
});

describe('event parsing', () => {
  it('accepts exactly the known events with every field of the right type, dropping extra fields', () => {
    const one = (event: unknown) => parseFlush(JSON.stringify({ events: [event] }));
    const ok = one({ name: 'session.ended', data: { accountId: 'x', tokenHashes: ['h'], reason: 'logout', extra: 1 } });
    assert.deepEqual(ok?.events[0], { name: 'session.ended', data: { accountId: 'x', tokenHashes: ['h'], reason: 'logout' } });
    for (const bad of [
      'not json',
      null,
      { name: 'nope', data: {} },
      { name: 'session.ended', data: { accountId: 'x', tokenHashes: 'h', reason: 'logout' } },
      { name: 'message.stored', data: { ...stored('t'), seq: '1' } },
      { name: 'read.moved' },
    ]) {
      assert.deepEqual(one(bad), { events: [], rejected: 1 }, JSON.stringify(bad));
    }
  });

  it('takes a read.moved without seq (an instance of the previous version, rolling deploy); a seq that is not a number is still refused', () => {
    const one = (event: unknown) => parseFlush(JSON.stringify({ events: [event] }));
    const old = { accountId: 'a', chatId: 'b', messageId: 'c', unread: 2 };
    assert.deepEqual(one({ name: 'read.moved', data: old }), { events: [{ name: 'read.moved', data: old }], rejected: 0 });
    assert.deepEqual(one({ name: 'read.moved', data: { ...old, seq: '5' } }), { events: [], rejected: 1 });
    assert.deepEqual(one({ name: 'read.moved', data: { ...old, seq: null } }), { events: [], rejected: 1 });
  });

  it('reads a flush: the good events in order, the malformed ones counted and dropped', () => {
    const good = { name: 'read.moved', data: { accountId: 'a', chatId: 'b', messageId: 'c', unread: 2, seq: 5 } };
    const flush = parseFlush(JSON.stringify({ events: [good, { name: 'read.moved', data: { accountId: 'a' } }, { ...good, data: { ...good.data, unread: 0 } }, 7], origin: 'x' }));
    assert.deepEqual(flush, { events: [good, { ...good, data: { ...good.data, unread: 0 } }], rejected: 2 });
    for (const bad of ['not json', 'null', '[]', JSON.stringify({ events: 'x' }), JSON.stringify(good)]) assert.equal(parseFlush(bad), undefined, bad);
  });

  it('reads the notice of an instance that dropped events it could not publish', () => {
    assert.deepEqual(parseFlush(JSON.stringify({ events: [], lost: true, origin: 'x' })), { events: [], rejected: 0, lost: true });
    assert.deepEqual(parseFlush(JSON.stringify({ events: [], lost: 'yes' })), { events: [], rejected: 0 });
  });
});

describe('apps are folders', () => {
  it('a folder with one index file exporting `app` is an app that can react to a stored message', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'apps-'));
    try {
      fs.mkdirSync(path.join(dir, 'shout'));
      fs.writeFileSync(
        path.join(dir, 'shout', 'index.js'),
        `exports.app = { name: 'shout', create: (deps) => ({ name: 'shout', requires: [], middleware: {}, handlers: {},
           reactors: { 'message.stored': async (list) => { for (const e of list) deps.heard.push(e.text.toUpperCase()); } } }) };`,
      );
      assert.deepEqual(appDirectories(dir), ['shout']);
      const mod = loadAppModules(dir).get('shout');
      assert.ok(mod !== undefined);
      const heard: string[] = [];
      const app = mod.create({ heard } as never, new Set(['shout']));
      const bus = new EventBus(new MemoryPubSub(), log);
      for (const [name, fn] of Object.entries(app.reactors ?? {})) bus.react(name as 'message.stored', fn as never);
      await bus.publish('message.stored', stored('hi'));
      assert.deepEqual(heard, ['HI']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('this build ships the apps APPS can name', () => {
    assert.deepEqual(appDirectories().slice(0, 7), ['auth', 'chats', 'messages', 'conversations', 'search', 'throttling', 'caching']);
  });
});
