// Simulcast: the camera goes out as two encodings (rids h and l); a
// subscriber that chose "Low bandwidth" receives the low one, another the
// high one. (Headless Chromium can not throttle WebRTC's UDP, so the low
// bandwidth subscriber is one that asks for `video-low`, as Galène's
// "low quality" receive setting does.)

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, join, inbound, until } = require('../lib.js');

let server;
const browsers = [];

before(async () => { server = await startServer(); });
after(async () => {
    for (const b of browsers) await b.close();
    if (server) await server.stop();
});

async function page(username, start, settings) {
    const b = await launchBrowser();
    browsers.push(b);
    const r = await join(b.page, server, { username, start, settings });
    assert.ok(r.joined, r.error);
    return b.page;
}

async function videoFrom(p, username) {
    return (await inbound(p)).find((r) => r.username === username && r.kind === 'video' && r.framesDecoded > 0);
}

test('a low-bandwidth subscriber gets the low simulcast layer', async () => {
    const alice = await page('alice', 'both');
    await until('alice publishes', async () => alice.evaluate(() => window.switchyard.conn.up.size === 1));
    const sim = await alice.evaluate(() => {
        const s = [...window.switchyard.conn.up.values()][0];
        return s.pc.getSenders().filter((x) => x.track && x.track.kind === 'video').map((x) => x.getParameters().encodings.map((e) => e.rid));
    });
    assert.deepEqual(sim, [['h', 'l']], 'the camera is published with rids h and l');
    // Bob chose "Low bandwidth" in the settings on an earlier visit.
    const bob = await page('bob', 'none', { receive: 'low' });
    const carol = await page('carol', 'none');
    const low = await until('bob decodes a low layer', async () => {
        const v = await videoFrom(bob, 'alice');
        return v && v.frameWidth > 0 && v.frameWidth <= 320 ? v : null;
    }, 40000);
    const high = await until('carol decodes the high layer', async () => {
        const v = await videoFrom(carol, 'alice');
        return v && v.frameWidth > low.frameWidth ? v : null;
    }, 40000);
    assert.ok(high.frameWidth >= 2 * low.frameWidth - 2, `high ${high.frameWidth} vs low ${low.frameWidth}`);
    // Switching while watching, right away: carol goes low, bob back to
    // everything. Chromium ignores keyframe requests that follow another
    // within 300 ms; the SFU asks again until the switch completes.
    await carol.click('#settings-button');
    await carol.selectOption('#receive-select', 'low');
    await carol.click('#settings .dialog-buttons button');
    await until('carol decodes the low layer', async () => {
        const v = await videoFrom(carol, 'alice');
        return v && v.frameWidth === low.frameWidth ? v : null;
    }, 40000);
    await bob.click('#settings-button');
    await bob.selectOption('#receive-select', 'all');
    await bob.click('#settings .dialog-buttons button');
    await until('bob decodes the high layer again', async () => {
        const v = await videoFrom(bob, 'alice');
        return v && v.frameWidth > low.frameWidth ? v : null;
    }, 40000);
});
