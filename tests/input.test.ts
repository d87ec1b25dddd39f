import assert from 'node:assert/strict';
import { harness, startApp } from './helpers/harness';
import { badParameters, buildChat, buildUser, getPage, joinChat, uniq } from './helpers/factories';

async function countRows(table: string): Promise<number> {
  const row = (await harness().infra.db(table).count<{ n: string }[]>({ n: '*' }))[0];
  return Number(row.n);
}

describe('input: numbers where text is expected', () => {
  it('keeps a JSON number exactly as written, digits and exponent alike, so the name works again', async () => {
    const { client } = harness().app;
    for (const written of ['12345678901234567890', '1e21', '-0.50', '7']) {
      const name = `${written}`;
      // A fresh prefix per run would change the number; the account name must be exactly the number.
      const taken = await client.post('/v1/auth/register', `{"user_name": ${written}, "password": "pw-${written}"}`);
      if (taken.status === 400) assert.deepEqual(taken.body, { message: 'user-already-exists' });
      else assert.equal(taken.status, 201);
      const login = await client.post('/v1/auth/login', { user_name: name, password: `pw-${written}` }).expect(201);
      assert.match((login.body as { session_id: string }).session_id, /^[0-9a-f]{32}$/);
    }
    const u = await buildUser(client);
    const chat = (await client.post('/v1/chats', '{"chat_name": 98765432109876543210}', u.session).expect(201)).body as { chat_id: string };
    const row = await harness().infra.db('chats').where({ id: chat.chat_id }).first<{ chat_name: string }>();
    assert.equal(row?.chat_name, '98765432109876543210');
  });

  it('keeps a number too large for a double (1e309, -1e309, 1e400) as written in a chat name and a message, not refused as Infinity', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    const me = await joinChat(client, chat, u.session);
    for (const written of ['1e309', '-1e309', '1e400']) {
      const made = (await client.post('/v1/chats', `{"chat_name": ${written}}`, u.session).expect(201)).body as { chat_id: string };
      const row = await harness().infra.db('chats').where({ id: made.chat_id }).first<{ chat_name: string }>();
      assert.equal(row?.chat_name, written);
      await client.post(`/v1/chats/${chat}/messages?user_id=${me}`, `{"message": ${written}}`, u.session).expect(201);
    }
    const page = await getPage(client, chat, u.session, 10);
    assert.deepEqual(page.messages.map((m) => m.text), ['1e309', '-1e309', '1e400']);
  });
});

describe('input: blank and deceptive names and messages', () => {
  it('refuses whitespace-only chat names, display names and messages, storing nothing', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    const me = await joinChat(client, chat, u.session);
    const chats = await countRows('chats');
    const members = await countRows('chat_members');
    for (const blank of [' ', '   ', '\t\n', '\u3000']) {
      await client.post('/v1/chats', { chat_name: blank }, u.session).expect(400).expect(badParameters);
      await client.post(`/v1/chats/${chat}/users`, { user_name: blank }, u.session).expect(400).expect(badParameters);
      await client.post(`/v1/chats/${chat}/messages?user_id=${me}`, { message: blank }, u.session).expect(400).expect(badParameters);
    }
    assert.equal(await countRows('chats'), chats);
    assert.equal(await countRows('chat_members'), members);
    assert.deepEqual((await getPage(client, chat, u.session, 10)).messages, []);
  });

  it('refuses names with control or invisible characters or outer spaces; keeps inner spaces and other scripts', async () => {
    const { client } = harness().app;
    const base = uniq('n');
    for (const bad of [` ${base}`, `${base} `, `${base}\u200b`, `${base}\nx`, `${base}\u0007`, `\u202e${base}`, `${base}\u00ad`]) {
      const res = await client.post('/v1/auth/register', { user_name: bad, password: 'pw' }).expect(400).expect(badParameters);
      assert.match((res.body as { detail: string }).detail, /^user_name: a name of 1 to 255 characters/);
    }
    for (const good of [`${base} smith`, `Ёлка ${base}`, `${base}😀`]) {
      await client.post('/v1/auth/register', { user_name: good, password: 'pw' }).expect(201);
    }
    const u = await buildUser(client);
    await client.post('/v1/chats', { chat_name: `team\u202e${base}` }, u.session).expect(400).expect(badParameters);
    const chat = await buildChat(client, u.session);
    await client.post(`/v1/chats/${chat}/users`, { user_name: `${base}\u200d` }, u.session).expect(400).expect(badParameters);
  });
});

describe('input: invisible (Default_Ignorable) characters in names', () => {
  // Letters or marks that render as nothing: "\u115falice" looks like "alice".
  const invisible = ['\u115f', '\u1160', '\u3164', '\uffa0', '\u17b4', '\u17b5', '\u180b', '\u180c', '\u180d', '\u180e', '\u180f', '\u034f', '\ufe00', '\ufe0f', '\u2065', '\ufff0', '\u{e0100}'];

  it('refuses account, display and chat names holding one, storing nothing; the detail names the rule', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    const users = await countRows('users');
    const chats = await countRows('chats');
    const members = await countRows('chat_members');
    for (const ch of invisible) {
      const base = uniq('di');
      for (const name of [`${ch}${base}`, `${base}${ch}x`, `${base}${ch}`]) {
        const res = await client.post('/v1/auth/register', { user_name: name, password: 'pw' }).expect(400).expect(badParameters);
        assert.match((res.body as { detail: string }).detail, /^user_name: a name of 1 to 255 characters/, JSON.stringify(name));
        await client.post('/v1/chats', { chat_name: name }, u.session).expect(400).expect(badParameters);
        await client.post(`/v1/chats/${chat}/users`, { user_name: name }, u.session).expect(400).expect(badParameters);
      }
    }
    assert.equal(await countRows('users'), users);
    assert.equal(await countRows('chats'), chats);
    assert.equal(await countRows('chat_members'), members);
  });

  it('keeps an emoji variation selector right after a pictograph (❤️, ❤︎), and visible marks and scripts', async () => {
    const { client } = harness().app;
    const base = uniq('vs');
    for (const good of [`${base} \u2764\ufe0f`, `\u2764\ufe0e${base}`, `cafe\u0301 ${base}`, `한국 ${base}`]) {
      await client.post('/v1/auth/register', { user_name: good, password: 'pw' }).expect(201);
    }
  });
});

describe('input: zero-width joiners in names', () => {
  it('keeps them where writing needs them (emoji sequences, after an Indic virama, Persian ZWNJ) in account, chat and display names', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    // Before, every one of these was 400 bad-parameters: the joiners are Default_Ignorable format characters.
    const written = ['👨\u200d👩\u200d👧', '🏳\ufe0f\u200d🌈', '👩🏽\u200d💻', '👩\u200d❤\ufe0f\u200d👨', 'क्\u200dष', 'ക്\u200cക', 'علی\u200cرضا', 'کتاب\u200cخانه'];
    for (const w of written) {
      const name = `${uniq('zw')} ${w}`;
      await client.post('/v1/auth/register', { user_name: name, password: 'pw' }).expect(201);
      const login = await client.post('/v1/auth/login', { user_name: name, password: 'pw' }).expect(201);
      const me = await client.get('/v1/auth/me', (login.body as { session_id: string }).session_id).expect(200);
      assert.equal((me.body as { user_name: string }).user_name, name);
      await client.post('/v1/chats', { chat_name: name }, u.session).expect(201);
      await client.post(`/v1/chats/${chat}/users`, { user_name: name }, (login.body as { session_id: string }).session_id).expect(201);
    }
  });

  it('refuses them anywhere else, storing nothing: between Latin letters, at either end, doubled, after a plain letter', async () => {
    const { client } = harness().app;
    const users = await countRows('users');
    const base = uniq('zw');
    for (const bad of [`${base}\u200d`, `\u200d${base}`, `ali\u200dce ${base}`, `ali\u200cce ${base}`, `${base} 😀\u200d\u200d😀`, `${base} a\u200d😀`, `${base} علی\u200c`, `${base} क\u200dष`]) {
      await client.post('/v1/auth/register', { user_name: bad, password: 'pw' }).expect(400).expect(badParameters);
    }
    assert.equal(await countRows('users'), users);
  });

  it('an account name with a joiner is the same account as without it: the twin is refused, and either spelling logs in', async () => {
    const { client } = harness().app;
    const base = uniq('fa');
    const withJoiner = `${base} علی\u200cرضا`;
    await client.post('/v1/auth/register', { user_name: withJoiner, password: 'pw' }).expect(201);
    await client.post('/v1/auth/register', { user_name: `${base} علیرضا`, password: 'other' }).expect(400, { message: 'user-already-exists' });
    const login = await client.post('/v1/auth/login', { user_name: `${base} علیرضا`, password: 'pw' }).expect(201);
    const me = await client.get('/v1/auth/me', (login.body as { session_id: string }).session_id).expect(200);
    assert.equal((me.body as { user_name: string }).user_name, withJoiner);
  });
});

describe('input: account names are unique after normalisation', () => {
  it('refuses Alice, ALICE and fullwidth ａｌｉｃｅ once alice exists; logs in with any spelling; stores the name as typed', async () => {
    const { client } = harness().app;
    const base = uniq('al').toLowerCase();
    await client.post('/v1/auth/register', { user_name: base, password: 'pw' }).expect(201);
    const fullwidth = [...base].map((c) => (/[a-z0-9_]/.test(c) && c !== '_' ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c)).join('');
    for (const twin of [base.toUpperCase(), `${base[0].toUpperCase()}${base.slice(1)}`, fullwidth]) {
      await client.post('/v1/auth/register', { user_name: twin, password: 'other' }).expect(400, { message: 'user-already-exists' });
    }
    const rows = await harness().infra.db('users').where('user_name', 'like', `%${base.slice(3)}%`).select('user_name');
    assert.deepEqual(rows.map((r: { user_name: string }) => r.user_name), [base]);
    const login = await client.post('/v1/auth/login', { user_name: base.toUpperCase(), password: 'pw' }).expect(201);
    const me = await client.get('/v1/auth/me', (login.body as { session_id: string }).session_id).expect(200);
    assert.equal((me.body as { user_name: string }).user_name, base);
    await client.post('/v1/auth/login', { user_name: fullwidth, password: 'pw' }).expect(201);
  });

  it('counts failed logins per account whatever the spelling', async () => {
    const app = await startApp(harness().infra, { LOGIN_MAX_FAILURES: '2', LOGIN_MAX_FAILURES_PER_ADDRESS: '100' });
    try {
      const base = uniq('lk').toLowerCase();
      await app.client.post('/v1/auth/register', { user_name: base, password: 'pw' }).expect(201);
      await app.client.post('/v1/auth/login', { user_name: base, password: 'bad' }).expect(400, { message: 'bad-password' });
      await app.client.post('/v1/auth/login', { user_name: base.toUpperCase(), password: 'bad' }).expect(400, { message: 'bad-password' });
      const locked = await app.client.post('/v1/auth/login', { user_name: `${base[0].toUpperCase()}${base.slice(1)}`, password: 'pw' });
      assert.equal(locked.status, 429);
      assert.deepEqual(locked.body, { message: 'too-many-login-attempts' });
    } finally {
      await app.close();
    }
  });
});

describe('input: percent-encoding in the query string', () => {
  it('a declared query parameter that is not UTF-8 once percent-decoded (%FF) is 400 bad-parameters, and changes nothing', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session);
    // Before, each of these ran on a U+FFFD in place of the byte: a 200 people search for a prefix nobody sent.
    badParameters(await client.get('/v1/users?prefix=%FFabc', u.session).expect(400));
    badParameters(await client.get('/v1/users?prefix=abc%C3', u.session).expect(400));
    badParameters(await client.get(`/v1/chats/${chatId}/messages?limit=1%FF`, u.session).expect(400));
    const messages = await countRows('messages');
    badParameters(await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}%FF`, { message: 'hello' }, u.session).expect(400));
    assert.equal(await countRows('messages'), messages, 'a message was stored');
    // Valid UTF-8 percent-encoding, a literal `%` and undeclared parameters are read as before.
    await client.get(`/v1/users?prefix=${encodeURIComponent('зоя')}`, u.session).expect(200, { users: [] });
    await client.get('/v1/users?prefix=ab%zz', u.session).expect(200, { users: [] });
    await client.get('/v1/users?prefix=abc&_=%FF', u.session).expect(200);
    await client.get(`/v1/chats/${chatId}/messages?limit=10&%FF=1`, u.session).expect(200);
  });
});
