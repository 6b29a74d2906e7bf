// Shared rooms in the real `switchyard` binary: a Galène client on /ws and an OWT client on
// /socket.io meet in the demo's `lobby`, each seeing the other in its own protocol's form
// (owt.md 17, checklist 47 through a real Galène WebSocket client).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startSwitchyard, token, Client } = require('../lib');

let srv;
before(async () => { srv = await startSwitchyard(); });
after(async () => { if (srv) await srv.stop(); });

// A Galène protocol client: JSON messages over /ws, recorded for `wait`.
class Galene {
  constructor(url, id) {
    this.id = id;
    this.messages = [];
    this.waiters = [];
    this.ws = new WebSocket(url.replace(/^http/, 'ws') + '/ws');
    this.ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString());
      if (m.type === 'ping') this.send({ type: 'pong' });
      this.messages.push(m);
      this.waiters = this.waiters.filter((w) => !w(m));
    });
    this.opened = new Promise((res, rej) => { this.ws.once('open', res); this.ws.once('error', rej); });
  }

  send(m) { this.ws.send(JSON.stringify(m)); }

  wait(pred, ms = 10000, what = 'message') {
    const found = this.messages.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for ${what}: ${JSON.stringify(this.messages)}`)), ms);
      this.waiters.push((m) => { if (pred(m)) { clearTimeout(t); resolve(m); return true; } return false; });
    });
  }

  async join(group, username) {
    await this.opened;
    this.send({ type: 'handshake', version: ['2'], id: this.id });
    await this.wait((m) => m.type === 'handshake', 5000, 'handshake');
    this.send({ type: 'join', kind: 'join', group, username, password: '' });
    return this.wait((m) => m.type === 'joined' && m.kind === 'join', 5000, 'joined');
  }

  close() { this.ws.close(); }
}

test('a Galène user and an OWT user share the lobby: presence and chat both ways', async () => {
  const alice = new Galene(srv.url, 'galene-alice');
  const joined = await alice.join('lobby', 'alice');
  assert.equal(joined.group, 'lobby');

  const bob = new Client(srv, 4);
  const [status, result] = await bob.login(await token(srv, 'lobby', 'bob', 'presenter'));
  assert.equal(status, 'ok', result);
  // OWT sees the Galène member in the room; Galène sees the OWT member as a user.
  assert.ok(result.room.participants.some((p) => p.id === 'galene-alice' && p.user === 'alice'),
    JSON.stringify(result.room.participants));
  const added = await alice.wait((m) => m.type === 'user' && m.kind === 'add' && m.username === 'bob', 5000, 'user add');
  assert.equal(added.id, result.id);

  // Galène broadcast chat reaches OWT as text to all.
  alice.send({ type: 'chat', kind: '', source: 'galene-alice', username: 'alice', dest: '', noecho: false, value: 'hello from galène' });
  const text = await bob.wait((e) => e.name === 'text' && e.data.message === 'hello from galène', 5000, 'text');
  assert.equal(text.data.from, 'galene-alice');
  assert.equal(text.data.to, 'all');

  // OWT text to all reaches Galène as chat with the sender's name.
  assert.deepEqual(await bob.req('text', { to: 'all', message: 'hello from owt' }), ['ok']);
  const chat = await alice.wait((m) => m.type === 'chat' && m.value === 'hello from owt', 5000, 'chat');
  assert.equal(chat.username, 'bob');
  assert.equal(chat.source, result.id);

  // A Galène user joining later gets both in the chat history.
  const carol = new Galene(srv.url, 'galene-carol');
  await carol.join('lobby', 'carol');
  const history = await carol.wait((m) => m.type === 'chathistory' && m.value === 'hello from owt', 5000, 'chathistory');
  assert.equal(history.username, 'bob');
  await carol.wait((m) => m.type === 'chathistory' && m.value === 'hello from galène', 5000, 'chathistory');

  // Leaving is seen on the other side.
  assert.deepEqual(await bob.req('logout'), ['ok']);
  await alice.wait((m) => m.type === 'user' && m.kind === 'delete' && m.id === result.id, 5000, 'user delete');
  alice.send({ type: 'join', kind: 'leave', group: 'lobby' });
  [alice, carol].forEach((g) => g.close());
  bob.close();
});
