// The home page lists public rooms and TV channels and leads into a room.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, artifact } = require('../lib.js');

let server;
let browser;

before(async () => {
    server = await startServer({
        groups: {
            'staff/weekly': { public: true, displayName: 'Weekly staff meeting', description: 'Mondays at ten.', 'wildcard-user': { password: { type: 'wildcard' }, permissions: 'present' } },
            hidden: { 'wildcard-user': { password: { type: 'wildcard' }, permissions: 'present' } },
        },
    });
    browser = await launchBrowser();
});

after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
});

test('public rooms and channels are listed', async () => {
    const page = browser.page;
    await page.goto(`${server.url}/web/`);
    await page.waitForSelector('#rooms .room-card');
    const names = await page.$$eval('#rooms .room-card', (l) => l.map((a) => a.dataset.name));
    assert.deepEqual(names, ['lobby', 'staff/weekly']);
    assert.equal(await page.getAttribute('#rooms .room-card[data-name="staff/weekly"]', 'href'), '/group/staff/weekly/');
    await page.waitForFunction(() => !document.getElementById('channels').hasAttribute('aria-busy'));
    const channels = await page.$$eval('#channels .channel-card', (l) => l.length);
    const api = await (await fetch(`${server.url}/api/channels`)).json();
    assert.equal(channels, api.length);
    await page.screenshot({ path: artifact('home-desktop.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: artifact('home-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 720 });
    await page.click('#rooms .room-card[data-name="lobby"]');
    await page.waitForSelector('#login-form', { state: 'visible' });
    assert.equal(await page.textContent('#login-title'), 'Lobby');
    await page.screenshot({ path: artifact('login-desktop.png') });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: artifact('login-phone.png') });
});
