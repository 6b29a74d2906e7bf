// TV in the browser: a channel plays in Chromium from the server's live
// fragmented MP4, on its watch page and in the home page's player.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, until, sleep, artifact } = require('../lib.js');

let server;
let browser;

before(async () => {
    server = await startServer();
    browser = await launchBrowser();
});

after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
});

/** currentTime and decoded frames of the page's <video> matching `selector`. */
function progress(page, selector) {
    return page.$eval(selector, (v) => ({
        time: v.currentTime,
        frames: v.getVideoPlaybackQuality().totalVideoFrames,
        width: v.videoWidth,
        paused: v.paused,
        error: v.error && v.error.message,
    }));
}

async function playsOn(page, selector) {
    const first = await until('the video starts', async () => {
        const p = await progress(page, selector);
        if (p.error) throw new Error(`video error: ${p.error}`);
        // playback begins once a couple of seconds are buffered
        return !p.paused && p.frames > 0 && p.time > 0.2 ? p : null;
    }, 30000);
    await sleep(2000);
    const second = await progress(page, selector);
    assert.ok(second.time > first.time + 1, `currentTime advances (${first.time} -> ${second.time})`);
    assert.ok(second.frames > first.frames, `frames are decoded (${first.frames} -> ${second.frames})`);
    assert.equal(second.width, 640);
    return second;
}

test("a demo channel's watch page plays in Chromium", async () => {
    const page = browser.page;
    const channels = await (await fetch(`${server.url}/api/channels`)).json();
    assert.ok(channels.length > 0);
    await page.goto(`${server.url}/watch/${channels[0].id}`, { waitUntil: "domcontentloaded" });
    await playsOn(page, 'video#tv');
    await page.screenshot({ path: artifact('tv-watch.png') });
});

test('the home page plays a channel in its own player', async () => {
    const page = browser.page;
    await page.goto(`${server.url}/web/`);
    await page.waitForSelector('#channels .channel-card button.watch');
    const id = await page.$eval('#channels .channel-card', (c) => c.dataset.id);
    assert.equal(await page.getAttribute(`#channels .channel-card[data-id="${id}"] a[href^="/watch/"]`, 'href'), `/watch/${id}`);
    await page.click(`#channels .channel-card[data-id="${id}"] button.watch`);
    await page.waitForSelector('#tv-player', { state: 'visible' });
    await playsOn(page, '#tv-video');
    await page.screenshot({ path: artifact('tv-home.png'), fullPage: true });
    await page.click('#tv-close');
    await page.waitForSelector('#tv-player', { state: 'hidden' });
});
