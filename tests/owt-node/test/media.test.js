// OWT conformance checklist, publications and subscriptions: the SDP comes from real
// WebRTC peers (str0m test peers run by the test server), so ICE, DTLS and media are real.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, rest, createRoom, token, Client, loggedIn, sleep, peers } = require('../lib');

let srv;
let room;
before(async () => {
  srv = await startServer();
  room = await createRoom(srv, 'media');
});
after(async () => { if (srv) await srv.stop(); });

// The str0m test peers that the test server runs, bound to this file's server.
const report = (peer) => peers.report(srv, peer);
const waitReport = (peer, pred, ms) => peers.waitReport(srv, peer, pred, ms);
const publish = (c, simulcast) => peers.publish(srv, c, simulcast);
const subscribe = (c, media) => peers.subscribe(srv, c, media);

test('18-28: publish, announce, subscribe, control, unpublish', async () => {
  const a = await loggedIn(srv, room._id, 'publisher');
  const b = await loggedIn(srv, room._id, 'watcher', 'viewer', 4);

  // 18-21
  const pub = await publish(a);
  assert.match(pub.id, /^[0-9a-zA-Z-]+$/);
  assert.equal(pub.answer.type, 'answer');
  assert.match(pub.answer.sdp, /a=candidate/);
  assert.equal(a.events.filter((e) => e.name === 'progress' && e.data.id === pub.id && e.data.status === 'soac').length, 1);
  const addA = await a.wait((e) => e.name === 'stream' && e.data.status === 'add' && e.data.id === pub.id);
  const ready = a.events.find((e) => e.name === 'progress' && e.data.id === pub.id && e.data.status === 'ready');
  assert.ok(ready.at < addA.at, 'ready precedes stream add');
  const addB = await b.wait((e) => e.name === 'stream' && e.data.status === 'add' && e.data.id === pub.id);
  const info = addB.data.data;
  assert.ok(Array.isArray(info.media.video.original) && info.media.video.original.length > 0);
  assert.equal(info.info.owner, a.id);
  assert.equal(info.type, 'forward');
  assert.deepEqual(info.info.attributes, { label: 'camera' });
  assert.equal(info.media.audio.format.codec, 'opus');

  // 22
  const c = await loggedIn(srv, room._id, 'latecomer', 'viewer');
  assert.ok(c.result.room.streams.some((s) => s.id === pub.id && Array.isArray(s.media.video.original)));

  // 25
  assert.deepEqual(await b.req('subscribe', { media: { audio: false, video: false } }), ['error', 'Bad subscription request']);
  assert.deepEqual(await b.req('subscribe', { media: { audio: { from: 'nope' }, video: false } }), ['error', 'Target audio stream does NOT satisfy:Requested audio stream']);
  assert.deepEqual(await b.req('subscribe', { media: { audio: false, video: { from: pub.id, simulcastRid: 'q' } } }), ['error', 'Target video stream does NOT satisfy:Simulcast RID is not acceptable']);

  // 26
  const sub = await subscribe(b, { audio: { from: pub.id }, video: { from: pub.id } });
  assert.match(sub.answer.sdp, /a=sendonly/);
  assert.match(sub.answer.sdp, /a=msid:/);
  assert.match(sub.answer.sdp, /a=candidate/);
  await waitReport(sub.peer, (r) => r.videoFrames > 5 && r.audioFrames > 5);
  assert.ok(!b.events.some((e) => e.name === 'stream' && e.data.id === sub.id));

  // 24
  assert.deepEqual(await b.req('stream-control', { id: pub.id, operation: 'pause', data: 'av' }), ['error', 'unauthorized']);
  assert.deepEqual(await a.req('stream-control', { id: pub.id, operation: 'pause', data: 'av' }), ['ok']);
  for (const field of ['audio.status', 'video.status']) {
    await b.wait((e) => e.name === 'stream' && e.data.status === 'update' && e.data.data.field === field && e.data.data.value === 'inactive');
    await a.wait((e) => e.name === 'stream' && e.data.status === 'update' && e.data.data.field === field && e.data.data.value === 'inactive');
  }
  assert.deepEqual(await a.req('stream-control', { id: pub.id, operation: 'play', data: 'av' }), ['ok']);
  await b.wait((e) => e.name === 'stream' && e.data.status === 'update' && e.data.data.field === 'video.status' && e.data.data.value === 'active');

  // 28
  assert.deepEqual(await b.req('subscription-control', { id: sub.id, operation: 'pause', data: 'video' }), ['ok']);
  await sleep(500);
  const paused = (await report(sub.peer)).videoFrames;
  await sleep(800);
  assert.ok((await report(sub.peer)).videoFrames - paused <= 2, 'video keeps flowing while paused');
  assert.deepEqual(await b.req('subscription-control', { id: sub.id, operation: 'play', data: 'video' }), ['ok']);
  await waitReport(sub.peer, (r) => r.videoFrames > paused + 5);
  const [qs] = await b.req('subscription-control', { id: sub.id, operation: 'querybwe' });
  assert.equal(qs, 'error');
  assert.deepEqual(await a.req('subscription-control', { id: sub.id, operation: 'pause', data: 'av' }), ['error', 'unauthorized']);

  // 23
  assert.deepEqual(await b.req('unpublish', { id: pub.id }), ['error', 'unauthorized']);
  assert.deepEqual(await a.req('unpublish', { id: pub.id }), ['ok']);
  for (const x of [a, b, c]) {
    await x.wait((e) => e.name === 'stream' && e.data.status === 'remove' && e.data.id === pub.id);
  }
  const loss = await b.wait((e) => e.name === 'progress' && e.data.id === sub.id && e.data.status === 'error');
  assert.equal(loss.data.data, 'Source stream loss');
  assert.ok(!a.events.some((e) => e.name === 'progress' && e.data.id === pub.id && e.data.status === 'error'));
  [a, b, c].forEach((x) => x.close());
});

test('27: simulcast publication, subscriber picks a rid', async () => {
  const a = await loggedIn(srv, room._id, 'simul');
  const b = await loggedIn(srv, room._id, 'simul-watch', 'viewer');
  const pub = await publish(a, ['h', 'l']);
  const upd = await b.wait((e) => e.name === 'stream' && e.data.id === pub.id
    && ((e.data.status === 'add' && e.data.data.media.video.original.length === 2)
      || (e.data.status === 'update' && e.data.data.field === '.')), 15000, 'simulcast info');
  const info = upd.data.status === 'add' ? upd.data.data : upd.data.data.value;
  assert.deepEqual(info.media.video.original.map((o) => o.simulcastRid), ['h', 'l']);
  // Each rid is its own encoding: 'h' is the publisher's first, 'l' its second.
  const low = await subscribe(b, { audio: false, video: { from: pub.id, simulcastRid: 'l' } });
  const high = await subscribe(b, { audio: false, video: { from: pub.id, simulcastRid: 'h' } });
  await waitReport(low.peer, (r) => r.videoFrames > 5 && r.videoEncoding === 1);
  await waitReport(high.peer, (r) => r.videoFrames > 5 && r.videoEncoding === 0);
  [a, b].forEach((x) => x.close());
});

test('39+40: streams over REST', async () => {
  const a = await loggedIn(srv, room._id, 'rest-pub');
  const b = await loggedIn(srv, room._id, 'rest-watch', 'viewer');
  const pub = await publish(a);
  await b.wait((e) => e.name === 'stream' && e.data.status === 'add' && e.data.id === pub.id);
  const list = await rest(srv, 'GET', `/v1.1/rooms/${room._id}/streams`);
  assert.ok(list.json.some((s) => s.id === pub.id && s.info.owner === a.id));
  const one = await rest(srv, 'GET', `/v1/rooms/${room._id}/streams/${pub.id}`);
  assert.equal(one.json.id, pub.id);
  const patch = await rest(srv, 'PATCH', `/v1/rooms/${room._id}/streams/${pub.id}`, [{ op: 'replace', path: '/media/audio/status', value: 'inactive' }]);
  assert.equal(patch.status, 200);
  assert.equal(patch.json.media.audio.status, 'inactive');
  await b.wait((e) => e.name === 'stream' && e.data.status === 'update' && e.data.data.field === 'audio.status' && e.data.data.value === 'inactive');
  const mix = await rest(srv, 'PATCH', `/v1/rooms/${room._id}/streams/${pub.id}`, [{ op: 'add', path: '/info/inViews', value: 'common' }]);
  assert.ok(mix.status >= 400 && mix.json.error, mix.body);
  assert.equal((await rest(srv, 'GET', `/v1/rooms/${room._id}/streams/${pub.id}`)).status, 200);
  assert.equal((await rest(srv, 'GET', `/v1/rooms/${room._id}/streams/nope`)).json.error.code, 1004);
  const del = await rest(srv, 'DELETE', `/v1/rooms/${room._id}/streams/${pub.id}`);
  assert.equal(del.status, 200);
  for (const x of [a, b]) await x.wait((e) => e.name === 'stream' && e.data.status === 'remove' && e.data.id === pub.id);
  await sleep(200);
  assert.ok(!a.events.some((e) => e.name === 'progress' && e.data.id === pub.id && e.data.status === 'error'));
  [a, b].forEach((x) => x.close());
});

test('46: a Galène publication reaches an OWT subscriber', async () => {
  const r = await createRoom(srv, 'bridge');
  const b = await loggedIn(srv, r._id, 'owt-sub', 'viewer');
  await request(srv, 'POST', '/test/galene/join', { room: 'bridge', id: 'gal-pub', user: 'galpub' });
  const g = (await request(srv, 'POST', '/test/galene/publish', { room: 'bridge', owner: 'gal-pub' })).json;
  assert.ok(g.id, JSON.stringify(g));
  const add = await b.wait((e) => e.name === 'stream' && e.data.status === 'add' && e.data.id === g.id, 15000, 'galene stream add');
  assert.equal(add.data.data.info.owner, 'gal-pub');
  assert.equal(add.data.data.media.video.source, 'camera');
  const sub = await subscribe(b, { audio: { from: g.id }, video: { from: g.id } });
  await waitReport(sub.peer, (x) => x.videoFrames > 5);
  // 39: the management API lists the Galène publication with the OWT ones.
  const list = await rest(srv, 'GET', `/v1.1/rooms/${r._id}/streams`);
  assert.ok(list.json.some((s) => s.id === g.id && s.info.owner === 'gal-pub'), list.body);
  b.close();
});

test('12.3: subscription-control update switches the source of each kind', async () => {
  const a = await loggedIn(srv, room._id, 'switch-a');
  const c = await loggedIn(srv, room._id, 'switch-c');
  const b = await loggedIn(srv, room._id, 'switch-watch', 'viewer');
  const first = await publish(a);
  const second = await publish(c);
  const sub = await subscribe(b, { audio: { from: first.id }, video: { from: first.id } });
  await waitReport(sub.peer, (r) => r.videoFrames > 5);

  assert.deepEqual(await b.req('subscription-control', { id: sub.id, operation: 'update', data: { video: { from: 'nope' } } }),
    ['error', 'Target video stream does NOT satisfy:Requested video stream']);
  assert.deepEqual(await b.req('subscription-control', { id: sub.id, operation: 'update', data: { audio: { from: 'nope' } } }),
    ['error', 'Target audio stream does NOT satisfy:Requested audio stream']);
  const update = { audio: { from: second.id }, video: { from: second.id } };
  assert.deepEqual(await b.req('subscription-control', { id: sub.id, operation: 'update', data: update }), ['ok']);

  // The first publication ending no longer ends the subscription: it now reads the second.
  assert.deepEqual(await a.req('unpublish', { id: first.id }), ['ok']);
  await b.wait((e) => e.name === 'stream' && e.data.status === 'remove' && e.data.id === first.id);
  const before = await report(sub.peer);
  await waitReport(sub.peer, (r) => r.videoFrames > before.videoFrames + 20 && r.audioFrames > before.audioFrames + 20);
  assert.ok(!b.events.some((e) => e.name === 'progress' && e.data.id === sub.id && e.data.status === 'error'),
    'the switched subscription was ended with its old source');
  [a, b, c].forEach((x) => x.close());
});
