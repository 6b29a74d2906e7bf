// Lost connection: when the server goes away the page says so and retries
// with backoff; when it is back, the client rejoins and media flows again.

'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, join, until, waitMediaFrom, artifact } = require('../lib.js');

let server;
const browsers = [];

after(async () => {
    for (const b of browsers) await b.close();
    if (server) await server.stop();
});

test('the client reconnects after the server restarts', async () => {
    server = await startServer();
    const pages = [];
    for (const u of ['alice', 'bob']) {
        const b = await launchBrowser();
        browsers.push(b);
        assert.ok((await join(b.page, server, { username: u })).joined);
        pages.push(b.page);
    }
    await waitMediaFrom(pages[1], 'alice');
    const { port, data } = server;
    await server.stop({ keep: true });
    await pages[0].waitForSelector('#banner', { state: 'visible', timeout: 10000 });
    assert.match(await pages[0].textContent('#banner-text'), /Connection lost/);
    assert.equal(await pages[0].textContent('#conn-state'), 'offline');
    await pages[0].screenshot({ path: artifact('connection-lost.png') });
    server = await startServer({ port, dataDir: data });
    await until('alice is connected again', async () => (await pages[0].textContent('#conn-state')) === 'connected', 45000);
    await pages[0].waitForSelector('#banner', { state: 'hidden', timeout: 5000 });
    const m = await waitMediaFrom(pages[1], 'alice', { ms: 45000 });
    assert.ok(m.video[1].framesDecoded > m.video[0].framesDecoded);
    await waitMediaFrom(pages[0], 'bob', { ms: 45000 });
});
