import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { RedisKv } from '../messenger/infra/kv';
import { createPresence } from '../messenger/infra/presence';
import { MODE } from './helpers/env';
import { harness } from './helpers/harness';

describe(`presence (${MODE === 'services' ? 'Redis' : 'memory'})`, () => {
  it('an account marked with its dashed id is online when asked by its wire id, and the other way round', async () => {
    const presence = createPresence(harness().infra.kv);
    const dashed = randomUUID();
    const wire = dashed.replace(/-/g, '');
    await presence.heartbeat('instance-a', [dashed]);
    assert.deepEqual([...(await presence.online([wire, randomUUID()]))], [wire]);
    assert.deepEqual([...(await presence.online([dashed]))], [dashed]);
  });

  it('stays online while any instance holds a mark; offline once the last leaves', async () => {
    const presence = createPresence(harness().infra.kv);
    const id = randomUUID();
    await presence.heartbeat('a', [id]);
    await presence.heartbeat('b', [id]);
    await presence.leave('a', id);
    assert.equal((await presence.online([id])).size, 1);
    await presence.leave('b', id);
    assert.equal((await presence.online([id])).size, 0);
  });

  it('a mark expires when its instance stops renewing it (a crashed instance leaves nobody online)', async () => {
    const presence = createPresence(harness().infra.kv, 1);
    const id = randomUUID();
    await presence.heartbeat('dies', [id]);
    assert.equal((await presence.online([id])).size, 1);
    const deadline = Date.now() + 3000;
    while ((await presence.online([id])).size > 0) {
      assert.ok(Date.now() < deadline, 'still online 3 s after a 1 s mark');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  it('a renewal answers the accounts that had no live mark left (online again with it), each to one instance only', async () => {
    const presence = createPresence(harness().infra.kv, 1);
    const [kept, lapsed] = [randomUUID(), randomUUID()];
    assert.deepEqual(await presence.heartbeat('a', [kept, lapsed]), [kept, lapsed], 'never marked: both come online');
    assert.deepEqual(await presence.heartbeat('a', [kept, lapsed]), [], 'renewed in time: nothing new');
    const deadline = Date.now() + 3000;
    while ((await presence.online([lapsed])).size > 0) {
      assert.ok(Date.now() < deadline, 'still online 3 s after a 1 s mark');
      await new Promise((r) => setTimeout(r, 100));
    }
    await presence.heartbeat('b', [kept]);
    const wire = lapsed.replace(/-/g, '');
    assert.deepEqual(await presence.heartbeat('a', [kept, wire]), [wire], 'the lapsed one, in the spelling asked; the other held by b');
    assert.deepEqual(await presence.heartbeat('b', [lapsed]), [], 'marked again by a already');
  });

  it('arrive says whether the account came online, leave whether it is offline now, each in one step with its mark', async () => {
    const presence = createPresence(harness().infra.kv);
    const id = randomUUID();
    assert.equal(await presence.arrive('a', id), true, 'the first instance brings it online');
    assert.equal(await presence.arrive('a', id), true, 'its own mark again: no other instance has it');
    assert.equal(await presence.arrive('b', id), false, 'a second instance finds it online');
    assert.equal(await presence.leave('a', id), false, 'b still holds a mark');
    assert.equal(await presence.leave('a', id), false, 'leaving twice changes nothing');
    assert.equal(await presence.leave('b', id), true, 'the last mark gone: offline');
    assert.equal((await presence.online([id])).size, 0);
    assert.equal(await presence.arrive('b', id.replace(/-/g, '').toUpperCase()), true, 'any spelling of the id');
    assert.deepEqual([...(await presence.online([id]))], [id]);
  });
  it('asks about 5,000 accounts in a few store commands, answering exactly the online ones (a 50,000-member list cost a command each)', async () => {
    const kv = harness().infra.kv;
    const presence = createPresence(kv);
    const ids = Array.from({ length: 5000 }, () => randomUUID());
    const on = [ids[0], ids[999], ids[1000], ids[4999]];
    await presence.heartbeat('instance-a', on);
    let commands = 0;
    const redis = kv instanceof RedisKv ? kv.redis : undefined;
    const send = redis?.sendCommand.bind(redis);
    if (redis !== undefined && send !== undefined) {
      redis.sendCommand = ((...args: Parameters<typeof send>) => {
        commands++;
        return send(...args);
      }) as typeof redis.sendCommand;
    }
    try {
      const online = await presence.online([...ids, ids[0]]);
      assert.deepEqual([...online].sort(), [...on].sort());
    } finally {
      if (redis !== undefined && send !== undefined) redis.sendCommand = send;
    }
    if (redis !== undefined) assert.ok(commands <= 10, `${commands} commands for 5,000 accounts`);
    for (const id of on) await presence.leave('instance-a', id);
  });

  it('expired answers each account whose marks all expired without a leave once, to one caller; not one that left or is still renewed', async () => {
    const a = createPresence(harness().infra.kv, 1);
    // Two instances' views of one store (in memory, the store is the object itself).
    const b = MODE === 'services' ? createPresence(harness().infra.kv, 1) : a;
    const [died, left, renewed] = [randomUUID(), randomUUID(), randomUUID()];
    await a.arrive('dies', died);
    await a.arrive('dies', left);
    await a.leave('dies', left);
    await a.arrive('dies', renewed);
    await new Promise((r) => setTimeout(r, 700));
    await b.heartbeat('lives', [renewed]);
    await new Promise((r) => setTimeout(r, 600));
    const [fromA, fromB] = await Promise.all([a.expired(1000), b.expired(1000)]);
    const key = (id: string) => id.replace(/-/g, '');
    assert.deepEqual([...fromA, ...fromB].filter((id) => [died, left, renewed].map(key).includes(id)), [key(died)]);
    assert.deepEqual((await a.expired(1000)).filter((id) => id === key(died)), [], 'answered once');
    assert.equal((await a.online([renewed])).size, 1);
  });
});
