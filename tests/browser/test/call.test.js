// Two browsers in the demo's open room: each decodes the other's video and
// receives its audio; chat arrives with the sender's name; a screen share
// shows up as a second stream; a third and fourth participant fill the grid.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, join, inbound, until, waitMediaFrom, artifact, sleep } = require('../lib.js');

let server;
const browsers = [];

before(async () => {
    server = await startServer();
});

after(async () => {
    for (const b of browsers) await b.close();
    if (server) await server.stop();
});

async function participant(username, opts = {}) {
    const b = await launchBrowser(opts);
    browsers.push(b);
    const r = await join(b.page, server, { username, ...opts.join });
    assert.ok(r.joined, `${username} could not join: ${r.error}`);
    return b.page;
}

let alice, bob;

test('two participants decode each other\'s video and receive audio', async () => {
    alice = await participant('alice');
    bob = await participant('bob');
    for (const [page, other] of [[alice, 'bob'], [bob, 'alice']]) {
        const m = await waitMediaFrom(page, other);
        assert.ok(m.video[1].framesDecoded > m.video[0].framesDecoded,
            `video from ${other} keeps decoding: ${JSON.stringify(m.video)}`);
        assert.ok(m.audio[0] && m.audio[1].packetsReceived > m.audio[0].packetsReceived,
            `audio packets from ${other} keep arriving: ${JSON.stringify(m.audio)}`);
    }
    // Both see both people in the list.
    for (const page of [alice, bob]) {
        await until('two people listed', async () => (await page.$$('#user-list li.user')).length === 2);
    }
    await alice.waitForFunction(() => document.querySelectorAll('#grid .tile').length === 2);
    await sleep(500);
    await alice.screenshot({ path: artifact('two-party-call.png') });
});

test('chat arrives with the sender\'s name', async () => {
    await bob.click('#chat-button');
    await alice.click('#chat-button');
    await alice.fill('#chat-input', 'Hello from Alice');
    await alice.press('#chat-input', 'Enter');
    const got = await until('bob receives the message', async () => bob.$$eval('#messages li.msg', (lis) =>
        lis.map((li) => ({ from: li.querySelector('.from')?.textContent, text: li.querySelector('.text')?.textContent }))
            .find((m) => m.text === 'Hello from Alice')));
    assert.equal(got.from, 'alice');
    // The sender sees its own message once (the server's echo).
    const mine = await alice.$$eval('#messages li.msg.mine .text', (l) => l.map((x) => x.textContent));
    assert.deepEqual(mine.filter((t) => t === 'Hello from Alice').length, 1);
    await bob.fill('#chat-input', '/me waves');
    await bob.press('#chat-input', 'Enter');
    await until('alice sees the action', async () => alice.$$eval('#messages li.msg.action .text', (l) => l.some((x) => x.textContent === '* bob waves')));
});

test('muting the microphone shows at the others', async () => {
    await alice.click('#mic-button');
    assert.equal(await alice.getAttribute('#mic-button', 'aria-pressed'), 'false');
    assert.equal(await alice.evaluate(() => window.switchyard.local.camera.media.getAudioTracks()[0].enabled), false);
    await until('bob sees alice muted', async () => bob.$eval('.tile[data-username="alice"][data-label="camera"] .tile-name .icon', (i) => i.style.display !== 'none'));
    await bob.click('#people-button');
    await until('the people list shows it', async () => bob.$('#user-list li[data-username="alice"] .st.muted'));
    await alice.click('#mic-button');
    await until('bob sees alice unmuted', async () => bob.$eval('.tile[data-username="alice"][data-label="camera"] .tile-name .icon', (i) => i.style.display === 'none'));
});

test('choosing a camera replaces the stream in place', async () => {
    const before = await alice.evaluate(() => window.switchyard.local.camera.upId);
    await alice.click('#settings-button');
    const options = await alice.$$eval('#camera-select option', (l) => l.map((o) => o.value));
    assert.ok(options.length >= 2, 'the fake camera is listed');
    await alice.selectOption('#camera-select', options[1]);
    await until('a new up stream', async () => {
        const id = await alice.evaluate(() => window.switchyard.local.camera && window.switchyard.local.camera.upId);
        return id && id !== before;
    });
    await alice.click('#settings .dialog-buttons button');
    const after = await alice.evaluate(() => window.switchyard.local.camera.upId);
    await until('bob decodes the new stream', async () =>
        (await inbound(bob)).some((r) => r.stream === after && r.kind === 'video' && r.framesDecoded > 0));
    assert.equal((await bob.$$('.tile[data-username="alice"][data-label="camera"]')).length, 1, 'one tile, swapped in place');
});

test('a screen share appears as a second stream', async () => {
    await alice.click('#screen-button');
    await alice.waitForSelector('.tile[data-key="local-screen"]', { timeout: 15000 });
    const m = await waitMediaFrom(bob, 'alice', { label: 'screenshare' });
    assert.ok(m.video[1].framesDecoded > m.video[0].framesDecoded, JSON.stringify(m.video));
    const labels = (await inbound(bob)).filter((r) => r.username === 'alice' && r.kind === 'video').map((r) => r.label).sort();
    assert.deepEqual(labels, ['camera', 'screenshare']);
    await bob.waitForSelector('.tile.screen[data-username="alice"]');
    await alice.click('#screen-button');
    await until('the screen share closes at bob', async () =>
        (await bob.$$('.tile.screen')).length === 0, 15000);
});

test('the grid adapts to three and four participants', async () => {
    const carol = await participant('carol');
    const dave = await participant('dave', { viewport: { width: 390, height: 844 } });
    for (const [page, who] of [[carol, ['alice', 'bob']], [alice, ['carol']], [dave, ['alice', 'bob', 'carol']]]) {
        for (const u of who) await waitMediaFrom(page, u);
    }
    await alice.waitForFunction(() => document.querySelectorAll('#grid .tile').length === 4, null, { timeout: 20000 });
    await carol.click('#chat-button');
    const history = await carol.$$eval('#messages li.msg .text', (l) => l.map((x) => x.textContent));
    assert.ok(history.includes('Hello from Alice'), 'a late joiner gets the chat history');
    const cols = await alice.$eval('#grid', (g) => getComputedStyle(g).getPropertyValue('--cols').trim());
    assert.equal(cols, '2', 'four tiles on a desktop make a 2×2 grid');
    await sleep(800);
    await alice.screenshot({ path: artifact('grid-4-desktop.png') });
    await dave.screenshot({ path: artifact('grid-4-phone.png') });
    await carol.click('#people-button');
    await sleep(300);
    await carol.screenshot({ path: artifact('grid-people-panel.png') });
});

test('private messages reach only their addressee; a raised hand shows', async () => {
    await alice.click('.tab[data-tab="chat"]').catch(() => {});
    if (!(await alice.isVisible('#tab-chat'))) await alice.click('#chat-button');
    await alice.selectOption('#chat-dest', { label: 'bob' });
    await alice.fill('#chat-input', 'just for you');
    await alice.press('#chat-input', 'Enter');
    await until('bob gets the private message', async () => bob.$$eval('#messages li.msg.private', (l) =>
        l.some((li) => li.querySelector('.text').textContent === 'just for you' && li.querySelector('.from').textContent === 'alice')));
    assert.ok(await alice.$$eval('#messages li.msg.private.mine .badge', (l) => l.some((b) => b.textContent === 'to bob')));
    const carolPage = browsers[2].page;
    const carolTexts = await carolPage.$$eval('#messages li.msg .text', (l) => l.map((x) => x.textContent));
    assert.ok(!carolTexts.includes('just for you'), 'carol does not see it');
    await carolPage.click('#hand-button');
    if (!(await alice.isVisible('#tab-people'))) await alice.click('.tab[data-tab="people"]');
    await until('alice sees carol\'s hand', async () => alice.$('#user-list li[data-username="carol"] .st.hand'));
    await until('and on her tile', async () => alice.isVisible('.tile[data-username="carol"] .tile-hand'));
});
