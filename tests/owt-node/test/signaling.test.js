// OWT conformance checklist (reference owt.md section 20): transport, login, participants,
// text, tickets, REST drop, limits, and the shared room with Galène members.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer, request, rest, createRoom, token, Client, loggedIn, sleep, USER_AGENT,
} = require('../lib');

let srv;
let room;

before(async () => {
  srv = await startServer();
  room = await createRoom(srv, 'signaling');
});
after(async () => { if (srv) await srv.stop(); });

const closeAll = (...cs) => cs.forEach((c) => c.close());

test('1: EIO3 polling handshake has a length-prefixed open packet and 40', async () => {
  const r = await request(srv, 'GET', '/socket.io/?EIO=3&transport=polling');
  assert.equal(r.status, 200);
  const m = /^(\d+):0(\{.*?\})/.exec(r.body);
  assert.ok(m, r.body);
  const open = JSON.parse(m[2]);
  assert.equal(Number(m[1]), m[2].length + 1);
  assert.ok(open.sid);
  assert.ok(open.upgrades.includes('websocket'));
  assert.equal(typeof open.pingInterval, 'number');
  assert.equal(typeof open.pingTimeout, 'number');
  // socket.io 2 servers connect the default namespace by themselves.
  let rest_ = r.body.slice(m[0].length);
  if (!rest_.includes('40')) {
    rest_ = (await request(srv, 'GET', `/socket.io/?EIO=3&transport=polling&sid=${open.sid}`)).body;
  }
  assert.match(rest_, /2:40/);
  // And socket.io-client 2 upgrades that session to WebSocket.
  const c = new Client(srv, 2);
  await c.connected();
  for (let i = 0; i < 50 && c.socket.io.engine.transport.name !== 'websocket'; i++) await sleep(100);
  assert.equal(c.socket.io.engine.transport.name, 'websocket');
  c.close();
});

test('2: EIO4 polling handshake, 40 answered with a sid', async () => {
  const r = await request(srv, 'GET', '/socket.io/?EIO=4&transport=polling');
  assert.equal(r.status, 200);
  assert.match(r.body, /^0\{/);
  const open = JSON.parse(r.body.slice(1));
  assert.ok(open.sid && open.maxPayload);
  const p = await request(srv, 'POST', `/socket.io/?EIO=4&transport=polling&sid=${open.sid}`, '40', { 'content-type': 'text/plain;charset=UTF-8' });
  assert.equal(p.status, 200);
  const g = await request(srv, 'GET', `/socket.io/?EIO=4&transport=polling&sid=${open.sid}`);
  // Packets are separated by 0x1e; a heartbeat ping may come first.
  const packets = g.body.split('\x1e');
  assert.ok(packets.some((x) => /^40\{"sid":"[^"]+"\}$/.test(x)), JSON.stringify(g.body));
});

test('3: polling CORS echoes the Origin with credentials', async () => {
  const origin = 'http://other:3001';
  const r = await request(srv, 'GET', '/socket.io/?EIO=3&transport=polling', undefined, { origin });
  assert.equal(r.headers['access-control-allow-origin'], origin);
  assert.equal(r.headers['access-control-allow-credentials'], 'true');
  const pre = await request(srv, 'OPTIONS', '/socket.io/?EIO=3&transport=polling', undefined, {
    origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type',
  });
  assert.ok(pre.status === 200 || pre.status === 204, String(pre.status));
  assert.equal(pre.headers['access-control-allow-origin'], origin);
});

test('4+5: EIO3 polling with emoji text, and EIO3 and EIO4 clients exchanging text', async () => {
  const a = new Client(srv, 2, { transports: ['polling'] });
  const [sa, ra] = await a.login(await token(srv, room._id, 'alice'));
  assert.equal(sa, 'ok');
  const b = await loggedIn(srv, room._id, 'bob', 'presenter', 4);
  const message = 'héllo 🎉 wörld 𝕊';
  assert.deepEqual(await a.req('text', { to: 'all', message }), ['ok']);
  const got = await b.wait((e) => e.name === 'text' && e.data.message === message);
  assert.deepEqual(got.data, { from: ra.id, to: 'all', message });
  const echo = await a.wait((e) => e.name === 'text' && e.data.from === ra.id);
  assert.equal(echo.data.message, message);
  assert.deepEqual(await b.req('text', { to: ra.id, message: 'ünïcode ✓' }), ['ok']);
  const priv = await a.wait((e) => e.name === 'text' && e.data.to === 'me');
  assert.deepEqual(priv.data, { from: b.id, to: 'me', message: 'ünïcode ✓' });
  closeAll(a, b);
});

test('7: login result', async () => {
  const c = new Client(srv, 2);
  const [status, result] = await c.login(await token(srv, room._id, 'carol', 'viewer'));
  assert.equal(status, 'ok');
  assert.equal(result.user, 'carol');
  assert.equal(result.role, 'viewer');
  assert.deepEqual(result.permission, { publish: { audio: false, video: false }, subscribe: { audio: true, video: true } });
  assert.ok(result.room.participants.some((p) => p.id === result.id && p.user === 'carol'));
  assert.deepEqual(result.room.views, []);
  assert.ok(Array.isArray(result.room.streams));
  const ticket = JSON.parse(Buffer.from(result.reconnectionTicket, 'base64').toString());
  assert.equal(ticket.participantId, result.id);
  assert.equal(ticket.notAfter - ticket.notBefore, 600000);
  c.close();
});

test('9: a token works once; the second login is refused and disconnected', async () => {
  const tok = await token(srv, room._id, 'dave');
  const a = new Client(srv, 2);
  assert.equal((await a.login(tok))[0], 'ok');
  const b = new Client(srv, 2);
  const [s, e] = await b.login(tok);
  assert.equal(s, 'error');
  assert.equal(typeof e, 'string');
  await b.wait((ev) => ev.name === 'disconnect', 5000, 'disconnect');
  closeAll(a, b);
});

test('11: a token with an altered host is refused', async () => {
  const tok = JSON.parse(Buffer.from(await token(srv, room._id, 'eve'), 'base64').toString());
  tok.host = 'evil.example:443';
  const c = new Client(srv, 4);
  assert.deepEqual(await c.login(Buffer.from(JSON.stringify(tok)).toString('base64')), ['error', 'Invalid token signature']);
  await c.wait((ev) => ev.name === 'disconnect', 5000, 'disconnect');
  c.close();
});

test('12: protocol 1.2 and an incomplete userAgent are refused', async () => {
  const a = new Client(srv, 2);
  assert.deepEqual(await a.login(await token(srv, room._id, 'f'), { protocol: '1.2' }), ['error', 'Unknown client protocol']);
  await a.wait((ev) => ev.name === 'disconnect', 5000, 'disconnect');
  const b = new Client(srv, 2);
  const ua = { sdk: USER_AGENT.sdk, runtime: USER_AGENT.runtime };
  assert.deepEqual(await b.login(await token(srv, room._id, 'g'), { userAgent: ua }), ['error', 'User agent info is incorrect']);
  closeAll(a, b);
});

test('13: a second login on a logged-in connection', async () => {
  const a = await loggedIn(srv, room._id, 'h');
  assert.deepEqual(await a.login(await token(srv, room._id, 'h2')), ['error', 'Connection is in service']);
  a.close();
});

test('requests before login are illegal', async () => {
  const c = new Client(srv, 2);
  await c.connected();
  assert.deepEqual(await c.req('text', { to: 'all', message: 'x' }), ['error', 'Illegal request']);
  assert.deepEqual(await c.req('logout'), ['error', 'Illegal request']);
  assert.deepEqual(await c.req('publish', { media: { audio: { source: 'mic' }, video: false } }), ['error', 'Illegal request']);
  c.close();
});

test('14+15: join and leave notifications; logout ack has no data', async () => {
  const a = await loggedIn(srv, room._id, 'anna');
  const b = new Client(srv, 4);
  const [s, rb] = await b.login(await token(srv, room._id, 'ben', 'viewer'));
  assert.equal(s, 'ok');
  const join = await a.wait((e) => e.name === 'participant' && e.data.action === 'join' && e.data.data.id === rb.id);
  assert.deepEqual(join.data.data, { id: rb.id, user: 'ben', role: 'viewer' });
  assert.ok(!b.events.some((e) => e.name === 'participant' && e.data.data && e.data.data.id === rb.id));
  assert.deepEqual(await b.req('logout'), ['ok']);
  const leave = await a.wait((e) => e.name === 'participant' && e.data.action === 'leave' && e.data.data === rb.id);
  assert.deepEqual(leave.data, { action: 'leave', data: rb.id });
  closeAll(a, b);
});

test('16: text routing and errors', async () => {
  const a = await loggedIn(srv, room._id, 'tom');
  const b = await loggedIn(srv, room._id, 'tim', 'viewer', 4);
  assert.deepEqual(await a.req('text', { to: 'nobody', message: 'x' }), ['error', 'Target participant does NOT exist: nobody']);
  assert.deepEqual(await a.req('text', { to: '', message: 'x' }), ['error', 'Invalid receiver']);
  assert.deepEqual(await a.req('text', { to: 5, message: 'x' }), ['error', 'Invalid receiver']);
  const [s, e] = await a.req('text', { to: 'all', message: 'x'.repeat(2049) });
  assert.equal(s, 'error');
  assert.match(e, /too long/);
  await a.req('text', { to: b.id, message: 'only for tim' });
  await b.wait((ev) => ev.name === 'text' && ev.data.message === 'only for tim');
  await sleep(200);
  assert.ok(!a.events.some((ev) => ev.name === 'text' && ev.data.message === 'only for tim'));
  closeAll(a, b);
});

test('17: publish schema and permission errors', async () => {
  const a = await loggedIn(srv, room._id, 'pub');
  const [s, e] = await a.req('publish', { media: { audio: { source: 'mic' } } });
  assert.equal(s, 'error');
  assert.ok(e.startsWith('request'), e);
  assert.equal(e, "request.media should have required property 'video'");
  const v = await loggedIn(srv, room._id, 'viewer1', 'viewer');
  assert.deepEqual(await v.req('publish', { media: { audio: { source: 'mic' }, video: false } }), ['error', 'unauthorized']);
  closeAll(a, v);
});

test('unknown ids are reported without harming the session', async () => {
  const a = await loggedIn(srv, room._id, 'ids');
  assert.deepEqual(await a.req('unpublish', { id: '123' }), ['error', 'Stream does NOT exist']);
  assert.deepEqual(await a.req('unsubscribe', { id: '123' }), ['error', 'Subscription does NOT exist']);
  assert.deepEqual(await a.req('stream-control', { id: '123', operation: 'pause', data: 'av' }), ['error', 'Stream does NOT exist']);
  assert.deepEqual(await a.req('subscription-control', { id: '123', operation: 'pause', data: 'av' }), ['error', 'Subscription does NOT exist']);
  assert.deepEqual(await a.req('soac', { id: '123', signaling: { type: 'offer', sdp: 'v=0' } }), ['error', 'Session 123 does NOT exist']);
  assert.deepEqual(await a.req('soac', { id: '1 2', signaling: { type: 'offer', sdp: 'v=0' } }), ['error', 'Invalid session id']);
  assert.deepEqual(await a.req('text', { to: 'all', message: 'still here' }), ['ok']);
  a.close();
});

test('29: refreshReconnectionTicket returns a later ticket', async () => {
  const a = await loggedIn(srv, room._id, 'tick');
  const first = JSON.parse(Buffer.from(a.result.reconnectionTicket, 'base64').toString());
  await sleep(20);
  const [s, t] = await a.req('refreshReconnectionTicket');
  assert.equal(s, 'ok');
  const next = JSON.parse(Buffer.from(t, 'base64').toString());
  assert.ok(next.notAfter > first.notAfter);
  assert.equal(next.participantId, a.id);
  a.close();
});

test('32: relogin with a tampered or expired ticket', async () => {
  const a = await loggedIn(srv, room._id, 'relog');
  const t = JSON.parse(Buffer.from(a.result.reconnectionTicket, 'base64').toString());
  const forged = Buffer.from(JSON.stringify({ ...t, signature: Buffer.from('0'.repeat(64)).toString('base64') })).toString('base64');
  const b = new Client(srv, 2);
  await b.connected();
  assert.deepEqual(await b.req('relogin', forged), ['error', 'Invalid reconnection ticket signature']);
  await b.wait((ev) => ev.name === 'disconnect', 5000, 'disconnect');
  const expired = Buffer.from(JSON.stringify({ ...t, notBefore: 1, notAfter: 2 })).toString('base64');
  const c = new Client(srv, 4);
  await c.connected();
  assert.deepEqual(await c.req('relogin', expired), ['error', 'Ticket is expired']);
  await c.wait((ev) => ev.name === 'disconnect', 5000, 'disconnect');
  closeAll(a, b, c);
});

test('33: REST delete of a participant drops it', async () => {
  const a = await loggedIn(srv, room._id, 'stay');
  const b = await loggedIn(srv, room._id, 'go', 'presenter', 4);
  const r = await rest(srv, 'DELETE', `/v1/rooms/${room._id}/participants/${b.id}`);
  assert.equal(r.status, 200);
  await b.wait((e) => e.name === 'drop', 5000, 'drop');
  await b.wait((e) => e.name === 'disconnect', 5000, 'disconnect');
  await a.wait((e) => e.name === 'participant' && e.data.action === 'leave' && e.data.data === b.id);
  closeAll(a, b);
});

test('34+36+37+41+42: REST basics', async () => {
  const noAuth = await request(srv, 'GET', '/v1/rooms');
  assert.equal(noAuth.status, 401);
  assert.equal(noAuth.json.error.code, 1101);
  const created = await createRoom(srv, 'x');
  assert.ok(created._id);
  assert.equal(created.participantLimit, -1);
  assert.equal(created.inputLimit, -1);
  assert.deepEqual(created.roles.map((r) => r.role), ['presenter', 'viewer', 'audio_only_presenter', 'video_only_viewer', 'sip']);
  const list = await rest(srv, 'GET', '/v1/rooms?page=1&per_page=100');
  assert.ok(list.json.some((r) => r._id === created._id));
  const tok = await rest(srv, 'POST', `/v1/rooms/${created._id}/tokens/`, { user: 'u', role: 'presenter' });
  assert.equal(tok.status, 200);
  const t = JSON.parse(Buffer.from(tok.body, 'base64').toString());
  assert.deepEqual(Object.keys(t).sort(), ['host', 'secure', 'signature', 'tokenId']);
  const bad = await rest(srv, 'POST', `/v1/rooms/${created._id}/tokens/`, { user: 'u', role: 'nope' });
  assert.equal(bad.status, 400);
  assert.deepEqual(bad.json, { error: { code: 1201, message: 'Name or role not valid' } });
  const del = await rest(srv, 'DELETE', `/v1/rooms/${created._id}`);
  assert.equal(del.status, 200);
  assert.equal(del.body, 'Room deleted');
  const gone = await rest(srv, 'GET', `/v1/rooms/${created._id}`);
  assert.equal(gone.status, 404);
  assert.equal(gone.json.error.code, 1003);
  const opt = await request(srv, 'OPTIONS', '/v1/rooms/whatever');
  assert.equal(opt.status, 200);
  assert.equal(opt.headers['access-control-allow-origin'], '*');
  const unknown = await rest(srv, 'GET', '/v1/nothing');
  assert.deepEqual(unknown.json, { error: { code: 1001, message: 'Resource not found' } });
  const malformed = await request(srv, 'POST', '/v1/rooms', '{nope', { authorization: require('../lib').mauthHeader(srv.serviceId, srv.serviceKey) });
  assert.equal(malformed.status, 400);
  assert.equal(malformed.json.error.code, 1201);
});

test('38: participants over REST include Galène members; PATCH permission applies', async () => {
  const r = await createRoom(srv, 'mixed-room');
  const a = await loggedIn(srv, r._id, 'owtie');
  await request(srv, 'POST', '/test/galene/join', { room: 'mixed-room', id: 'galene-1', user: 'gal' });
  const join = await a.wait((e) => e.name === 'participant' && e.data.action === 'join' && e.data.data.id === 'galene-1');
  assert.deepEqual(join.data.data, { id: 'galene-1', user: 'gal', role: 'presenter' });
  const list = await rest(srv, 'GET', `/v1/rooms/${r._id}/participants`);
  assert.equal(list.status, 200);
  const ids = list.json.map((p) => p.id);
  assert.ok(ids.includes(a.id) && ids.includes('galene-1'), JSON.stringify(list.json));
  assert.ok(list.json.every((p) => p.permission && p.permission.publish));
  const patch = await rest(srv, 'PATCH', `/v1/rooms/${r._id}/participants/${a.id}`, [{ op: 'replace', path: '/permission/publish/video', value: false }]);
  assert.equal(patch.status, 200);
  assert.equal(patch.json.permission.publish.video, false);
  assert.deepEqual(await a.req('publish', { media: { audio: false, video: { source: 'camera' } } }), ['error', 'unauthorized']);
  await request(srv, 'POST', '/test/galene/leave', { room: 'mixed-room', id: 'galene-1' });
  await a.wait((e) => e.name === 'participant' && e.data.action === 'leave' && e.data.data === 'galene-1');
  a.close();
});

test('43: participantLimit', async () => {
  const r = await createRoom(srv, 'small', { participantLimit: 2 });
  const a = await loggedIn(srv, r._id, 'one');
  const b = await loggedIn(srv, r._id, 'two');
  const c = new Client(srv, 2);
  assert.deepEqual(await c.login(await token(srv, r._id, 'three')), ['error', 'Room is full']);
  closeAll(a, b, c);
});

test('44: a room with views still admits logins and reports none', async () => {
  const r = await createRoom(srv, 'viewful', { views: [{ label: 'common' }] });
  assert.deepEqual(r.views, []);
  const a = await loggedIn(srv, r._id, 'v');
  assert.deepEqual(a.result.room.views, []);
  a.close();
});

test('47: chat crosses between Galène and OWT', async () => {
  const r = await createRoom(srv, 'chatroom');
  const a = await loggedIn(srv, r._id, 'owt-chatter');
  await request(srv, 'POST', '/test/galene/join', { room: 'chatroom', id: 'g-chat', user: 'gchat' });
  await request(srv, 'POST', '/test/galene/chat', { room: 'chatroom', from: 'g-chat', message: 'hello from galène' });
  const t = await a.wait((e) => e.name === 'text' && e.data.from === 'g-chat');
  assert.deepEqual(t.data, { from: 'g-chat', to: 'all', message: 'hello from galène' });
  await request(srv, 'POST', '/test/galene/chat', { room: 'chatroom', from: 'g-chat', to: a.id, message: 'psst' });
  const p = await a.wait((e) => e.name === 'text' && e.data.message === 'psst');
  assert.equal(p.data.to, 'me');
  assert.deepEqual(await a.req('text', { to: 'all', message: 'hi galène' }), ['ok']);
  const h = await request(srv, 'GET', '/test/galene/history?room=chatroom');
  assert.ok(h.json.some((m) => m.from === a.id && m.value === 'hi galène'), h.body);
  assert.deepEqual(await a.req('text', { to: 'g-chat', message: 'private to galène' }), ['ok']);
  a.close();
});

test('Galène moderation (kick) drops an OWT participant', async () => {
  const r = await createRoom(srv, 'moderated');
  const a = await loggedIn(srv, r._id, 'stays');
  const b = await loggedIn(srv, r._id, 'kicked', 'presenter', 4);
  await request(srv, 'POST', '/test/galene/join', { room: 'moderated', id: 'g-op', user: 'op' });
  const k = await request(srv, 'POST', '/test/galene/kick', { room: 'moderated', id: b.id, by: 'g-op' });
  assert.equal(k.json.ok, true);
  await b.wait((e) => e.name === 'drop', 5000, 'drop');
  await b.wait((e) => e.name === 'disconnect', 5000, 'disconnect');
  await a.wait((e) => e.name === 'participant' && e.data.action === 'leave' && e.data.data === b.id);
  closeAll(a, b);
});

test('WebSocket-only (EIO3) and polling-only (EIO4) clients log in', async () => {
  const a = new Client(srv, 2, { transports: ['websocket'] });
  assert.equal((await a.login(await token(srv, room._id, 'ws-only')))[0], 'ok');
  const b = new Client(srv, 4, { transports: ['polling'] });
  assert.equal((await b.login(await token(srv, room._id, 'poll-only')))[0], 'ok');
  assert.deepEqual(await b.req('text', { to: 'all', message: '✓ polling' }), ['ok']);
  await a.wait((e) => e.name === 'text' && e.data.message === '✓ polling');
  closeAll(a, b);
});

test('a bad SDP offer ends that publication with a progress error, nobody else notices', async () => {
  const a = await loggedIn(srv, room._id, 'bad-sdp');
  const b = await loggedIn(srv, room._id, 'bystander', 'viewer', 4);
  const [s, r] = await a.req('publish', { media: { audio: { source: 'mic' }, video: false } });
  assert.equal(s, 'ok');
  assert.deepEqual(await a.req('soac', { id: r.id, signaling: { type: 'offer', sdp: 'this is not SDP' } }), ['ok']);
  const err = await a.wait((e) => e.name === 'progress' && e.data.id === r.id && e.data.status === 'error');
  assert.equal(typeof err.data.data, 'string');
  assert.deepEqual(await a.req('soac', { id: r.id, signaling: { type: 'offer', sdp: 'v=0' } }), ['error', `Session ${r.id} does NOT exist`]);
  assert.deepEqual(await b.req('text', { to: 'all', message: 'fine' }), ['ok']);
  assert.ok(!b.events.some((e) => e.name === 'stream' || e.name === 'progress'));
  closeAll(a, b);
});
