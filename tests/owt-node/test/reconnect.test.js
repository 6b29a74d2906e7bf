// OWT conformance checklist, deadlines and reconnection, on a portal whose login deadline
// is 2 s and whose reconnection window is 3 s (the defaults are 3 min and 60 s).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, createRoom, Client, loggedIn, sleep, peers } = require('../lib');

let srv;
let room;
before(async () => {
  srv = await startServer({ OWT_LOGIN_TIMEOUT_S: '2', OWT_RECONNECTION_TIMEOUT_S: '3' });
  room = await createRoom(srv, 'reconnect');
});
after(async () => { if (srv) await srv.stop(); });

// Cut the transport without logging out, as a network loss would.
function cut(c) { c.socket.io.engine.close(); }

test('6: a connection that does not log in is closed', async () => {
  const c = new Client(srv, 2);
  await c.connected();
  await c.wait((e) => e.name === 'disconnect', 8000, 'server-side close');
  c.close();
});

test('30: relogin within the window keeps the participant and replays notifications', async () => {
  const a = await loggedIn(srv, room._id, 'steady', 'presenter', 4);
  const b = await loggedIn(srv, room._id, 'flaky', 'presenter', 2);
  cut(b);
  await sleep(300);
  await a.req('text', { to: 'all', message: 'one' });
  await a.req('text', { to: b.id, message: 'two' });
  await sleep(1500);
  assert.ok(!a.events.some((e) => e.name === 'participant' && e.data.action === 'leave'), 'left too early');
  const b2 = new Client(srv, 2);
  await b2.connected();
  const [s, t] = await b2.req('relogin', b.result.reconnectionTicket);
  assert.equal(s, 'ok', t);
  const ticket = JSON.parse(Buffer.from(t, 'base64').toString());
  assert.equal(ticket.participantId, b.id);
  const one = await b2.wait((e) => e.name === 'text' && e.data.message === 'one');
  const two = await b2.wait((e) => e.name === 'text' && e.data.message === 'two');
  const ack = b2.events.find((e) => e.name === 'ack:relogin');
  assert.ok(ack.at < one.at && one.at < two.at, 'queued notifications after the ack, in order');
  assert.equal(two.data.to, 'me');
  await sleep(3500);
  assert.ok(!a.events.some((e) => e.name === 'participant' && e.data.action === 'leave'));
  await a.req('text', { to: b.id, message: 'three' });
  await b2.wait((e) => e.name === 'text' && e.data.message === 'three');
  [a, b, b2].forEach((x) => x.close());
});

test('31: without relogin the participant leaves when the window ends', async () => {
  const a = await loggedIn(srv, room._id, 'watcher');
  const b = await loggedIn(srv, room._id, 'vanishing');
  const pub = await peers.publish(srv, b);
  await a.wait((e) => e.name === 'stream' && e.data.status === 'add' && e.data.id === pub.id);
  cut(b);
  await sleep(1500);
  assert.ok(!a.events.some((e) => e.name === 'stream' && e.data.status === 'remove'), 'stream removed inside the window');
  const leave = await a.wait((e) => e.name === 'participant' && e.data.action === 'leave' && e.data.data === b.id, 8000, 'leave');
  assert.ok(leave);
  // Its publications go with it.
  await a.wait((e) => e.name === 'stream' && e.data.status === 'remove' && e.data.id === pub.id, 5000, 'stream remove');
  [a, b].forEach((x) => x.close());
});
