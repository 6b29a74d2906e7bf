// Passwords, operators and room limits as a user sees them: a wrong
// password and a full room give clear messages; an operator kicks a user,
// takes away and gives back the right to present, locks the room and asks
// for a recording.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, join, until, artifact } = require('../lib.js');

let server;
const browsers = [];

before(async () => {
    server = await startServer({
        groups: {
            meeting: {
                displayName: 'Team meeting',
                public: true,
                'allow-recording': true,
                users: { boss: { password: 'secret', permissions: 'op' } },
                'wildcard-user': { password: { type: 'wildcard' }, permissions: 'present' },
            },
            tiny: {
                'max-clients': 1,
                'wildcard-user': { password: { type: 'wildcard' }, permissions: 'present' },
            },
        },
    });
});

after(async () => {
    for (const b of browsers) await b.close();
    if (server) await server.stop();
});

async function browser(opts) {
    const b = await launchBrowser(opts);
    browsers.push(b);
    return b.page;
}

async function userAction(op, username, label) {
    if (!(await op.isVisible('#tab-people'))) await op.click('#people-button');
    await op.click(`#user-list li[data-username="${username}"] button.more`);
    await op.click(`#menu .menu-item:text-is("${label}")`);
}

let boss, eve;

test('a wrong password shows the error and leaves the form usable', async () => {
    boss = await browser();
    const r = await join(boss, server, { group: 'meeting', username: 'boss', password: 'wrong', start: 'none' });
    assert.equal(r.joined, false);
    assert.equal(r.error, 'Wrong username or password.');
    await boss.screenshot({ path: artifact('wrong-password.png') });
    const ok = await join(boss, server, { group: 'meeting', username: 'boss', password: 'secret', start: 'none' });
    assert.ok(ok.joined, ok.error);
    await until('boss is listed as host', async () => boss.$eval('#user-list li.me', (li) => li.textContent.includes('host')));
});

test('a full room says so', async () => {
    const first = await browser();
    assert.ok((await join(first, server, { group: 'tiny', username: 'first', start: 'none' })).joined);
    const second = await browser();
    const r = await join(second, server, { group: 'tiny', username: 'second', start: 'none' });
    assert.equal(r.joined, false);
    assert.equal(r.error, 'The room is full. Please try again later.');
});

test('a missing room says so', async () => {
    const p = await browser();
    const resp = await p.goto(`${server.url}/group/nosuchroom/`);
    assert.equal(resp.status(), 404);
    await p.waitForSelector('#ended', { state: 'visible' });
    assert.equal(await p.textContent('#ended-title'), 'This room does not exist');
});

test('an operator takes and gives the right to present', async () => {
    eve = await browser();
    assert.ok((await join(eve, server, { group: 'meeting', username: 'eve', start: 'both' })).joined);
    await until('eve publishes', async () => eve.$('.tile[data-key="local-camera"]'));
    await until('eve is listed at boss', async () => boss.$('#user-list li[data-username="eve"]'));
    await userAction(boss, 'eve', 'Stop presenting');
    await until('eve loses her camera and controls', async () =>
        (await eve.$('.tile[data-key="local-camera"]')) === null && await eve.$eval('#cam-button', (b) => b.disabled));
    await userAction(boss, 'eve', 'Allow presenting');
    await until('eve may present again', async () => eve.$eval('#cam-button', (b) => !b.disabled));
});

test('an operator locks the room; newcomers see why they can not enter', async () => {
    await boss.click('#lock-button');
    await until('the room shows as locked', async () => eve.isVisible('#locked-badge'));
    const late = await browser();
    const r = await join(late, server, { group: 'meeting', username: 'late', start: 'none' });
    assert.equal(r.joined, false);
    assert.equal(r.error, 'The server said: The room is locked.');
    await boss.click('#lock-button');
    await until('the room shows as unlocked', async () => !(await eve.isVisible('#locked-badge')));
});

test('an operator asks for a recording', async () => {
    await boss.click('#record-button');
    // Either the recorder joins, or the server explains why it can not.
    const outcome = await until('an answer to record', async () => {
        if (await boss.isVisible('#recording-badge')) return 'recording';
        const t = await boss.$$eval('.toast', (l) => l.map((x) => x.textContent));
        return t.find((x) => /record/i.test(x)) || null;
    }, 10000);
    if (outcome === 'recording') {
        await boss.click('#record-button');
        await until('recording stops', async () => !(await boss.isVisible('#recording-badge')));
    }
});

test('an invitation link lets a guest in without the password', async () => {
    await boss.click('#invite-button');
    const link = await until('the invitation link', async () => {
        if (!(await boss.isVisible('#invite-link a'))) return null;
        return boss.getAttribute('#invite-link a', 'href');
    }, 10000);
    assert.match(link, /\/group\/meeting\/\?token=/);
    const guest = await browser();
    await guest.goto(link);
    await guest.waitForSelector('#login-form', { state: 'visible' });
    assert.equal(await guest.isVisible('#password-field'), false, 'no password asked with a token');
    await guest.fill('#username', 'guest');
    await guest.check('input[name="start"][value="none"]');
    await guest.click('#join-button');
    await guest.waitForSelector('#call', { state: 'visible', timeout: 15000 });
    await until('boss sees the guest', async () => boss.$('#user-list li[data-username="guest"]'));
});

test('an operator kicks a user, who is told so', async () => {
    await userAction(boss, 'eve', 'Remove from meeting');
    await eve.waitForSelector('#ended', { state: 'visible', timeout: 10000 });
    assert.equal(await eve.textContent('#ended-title'), 'You were removed from the meeting');
    assert.match(await eve.textContent('#ended-text'), /boss: you have been kicked out/);
    await eve.screenshot({ path: artifact('kicked.png') });
    await until('eve is gone from the list', async () => (await boss.$('#user-list li[data-username="eve"]')) === null);
});
