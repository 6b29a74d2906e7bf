// Issue 7: one room, two protocols. A small OWT Client-Portal page of our own
// (tests/browser/owt/, not the OWT SDK) publishes over OWT while the Galène
// web client in a second Chromium decodes the video, and the OWT page
// subscribes to the Galène client's camera and decodes it.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, join, inbound, until, sleep, artifact, serveOwtPage, owtToken } = require('../lib.js');

let server;
const browsers = [];
let owtPage;
let galenePage;
let owtStream;

before(async () => {
    server = await startServer();
    const galene = await launchBrowser();
    browsers.push(galene);
    galenePage = galene.page;
    const r = await join(galenePage, server, { username: 'bob', start: 'both' });
    assert.ok(r.joined, r.error);
    await until('bob publishes', () => galenePage.evaluate(() => window.switchyard.conn.up.size === 1));

    const owt = await launchBrowser();
    browsers.push(owt);
    owtPage = owt.page;
    await serveOwtPage(owtPage, server);
    await owtPage.goto(`${server.url}/owt-test/index.html`);
    const token = await owtToken(server, 'lobby', 'alice');
    const login = await owtPage.evaluate((t) => window.owt.login(t), token);
    assert.equal(login.user, 'alice');
    assert.ok(login.room.participants.some((p) => p.user === 'bob'), `bob is a participant: ${JSON.stringify(login.room.participants)}`);
});

after(async () => {
    for (const b of browsers) await b.close();
    if (server) await server.stop();
});

/** framesDecoded of `page`'s video from `username`, Galène side. */
async function galeneFramesFrom(username) {
    const v = (await inbound(galenePage)).find((r) => r.username === username && r.kind === 'video');
    return v ? v.framesDecoded : 0;
}

test('a Galène client decodes what an OWT page publishes', async () => {
    owtStream = await owtPage.evaluate(() => window.owt.publish({ label: 'camera' }));
    // announced to the OWT side as a forward stream
    const info = await until('stream add for the publication', () => owtPage.evaluate((id) => window.owt.streams().find((s) => s.id === id), owtStream), 15000);
    assert.equal(info.type, 'forward');
    assert.ok(info.media.video, JSON.stringify(info));
    const first = await until('bob decodes alice', async () => {
        const n = await galeneFramesFrom('alice');
        return n > 0 ? n : null;
    }, 40000);
    await sleep(1500);
    const second = await galeneFramesFrom('alice');
    assert.ok(second > first, `framesDecoded rises on the Galène side (${first} -> ${second})`);
    const audio = (await inbound(galenePage)).find((r) => r.username === 'alice' && r.kind === 'audio');
    assert.ok(audio && audio.packetsReceived > 0, `audio from alice: ${JSON.stringify(audio)}`);
    await galenePage.screenshot({ path: artifact('owt-to-galene.png') });
});

test('an OWT page decodes what a Galène client publishes', async () => {
    const bobId = await galenePage.evaluate(() => window.switchyard.conn.id);
    const stream = await until("bob's camera announced over OWT", () => owtPage.evaluate(
        (owner) => window.owt.streams().find((s) => s.info && s.info.owner === owner && s.media.video), bobId), 20000);
    // Galène publishes simulcast: pick the primary encoding as the SDK would.
    const rid = (stream.media.video.original || [])[0] && stream.media.video.original[0].simulcastRid;
    const sub = await owtPage.evaluate(([id, r]) => window.owt.subscribe(id, { simulcastRid: r }), [stream.id, rid]);
    const video = async () => (await owtPage.evaluate((id) => window.owt.stats(id), sub)).find((r) => r.kind === 'video');
    const first = await until('alice decodes bob', async () => {
        const v = await video();
        return v && v.framesDecoded > 0 ? v : null;
    }, 40000);
    await sleep(1500);
    const second = await video();
    assert.ok(second.framesDecoded > first.framesDecoded, `framesDecoded rises on the OWT side (${first.framesDecoded} -> ${second.framesDecoded})`);
    assert.ok(second.frameWidth > 0, JSON.stringify(second));
    const audio = (await owtPage.evaluate((id) => window.owt.stats(id), sub)).find((r) => r.kind === 'audio');
    assert.ok(audio && audio.packets > 0, `audio from bob: ${JSON.stringify(audio)}`);
    await owtPage.screenshot({ path: artifact('galene-to-owt.png') });
});
