// Test harness: starts the switchyard binary on a free port with a temporary
// data folder, and launches Debian's Chromium (headless, fake camera and
// microphone, no network services) through playwright-core.

'use strict';

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
// `npm test` builds with cargo, which honours CARGO_TARGET_DIR.
const BIN = process.env.SWITCHYARD_BIN
    ? path.resolve(ROOT, process.env.SWITCHYARD_BIN)
    : path.join(path.resolve(ROOT, process.env.CARGO_TARGET_DIR || 'target'), 'debug', 'switchyard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

const CHROMIUM_ARGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-insecure-localhost',
    '--ignore-certificate-errors',
    '--auto-select-desktop-capture-source=Entire screen',
];

function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** Sections of the effective configuration, so the test config only names keys this binary knows. */
function knownSections() {
    try {
        const out = execFileSync(BIN, ['--print-config'], { encoding: 'utf8' });
        return new Set([...out.matchAll(/^\[([a-z_.]+)\]/gm)].map((m) => m[1]));
    } catch (e) {
        return new Set(['web']);
    }
}

/**
 * Starts the server. `groups` maps group names to their JSON description
 * (written to <data>/groups/NAME.json, as Galène's group files).
 */
async function startServer({ groups = {}, port = null, dataDir = null } = {}) {
    if (!fs.existsSync(BIN)) throw new Error(`no server binary at ${BIN} (build it, or set SWITCHYARD_BIN)`);
    const data = dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-web-'));
    const gdir = path.join(data, 'groups');
    fs.mkdirSync(gdir, { recursive: true });
    for (const [name, desc] of Object.entries(groups)) {
        const file = path.join(gdir, name + '.json');
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(file, JSON.stringify(desc, null, 2));
    }
    port = port || await freePort();
    const sections = knownSections();
    let toml = `[web]\nlisten = "127.0.0.1:${port}"\n`;
    // Services with ports of their own are off so tests never collide.
    for (const s of ['htsp', 'heliostv', 'movie']) {
        if (sections.has(s)) toml += `\n[${s}]\nenabled = false\n`;
    }
    if (sections.has('rtc')) toml += '\n[rtc]\nport_base = 0\nworkers = 1\n';
    // As in the demo: anyone may watch TV (the browser's TV player has no login of its own).
    if (sections.has('access')) toml += '\n[access]\nanonymous = true\n';
    const config = path.join(data, 'test.toml');
    fs.writeFileSync(config, toml);
    const log = fs.openSync(path.join(data, 'server.log'), 'a');
    const proc = spawn(BIN, ['--http', '--data', data, '--config', config], {
        stdio: ['ignore', log, log],
        env: Object.assign({}, process.env, { RUST_LOG: process.env.RUST_LOG || 'info' }),
    });
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30000;
    let exited = null;
    proc.on('exit', (code) => { exited = code; });
    for (;;) {
        if (exited !== null) {
            throw new Error(`switchyard exited with ${exited}:\n` + fs.readFileSync(path.join(data, 'server.log'), 'utf8'));
        }
        try {
            const r = await fetch(url + '/public-groups.json');
            if (r.ok) break;
        } catch (e) { /* not up yet */ }
        if (Date.now() > deadline) throw new Error('switchyard did not start within 30 s');
        await sleep(100);
    }
    return {
        url, port, data, proc,
        log: () => fs.readFileSync(path.join(data, 'server.log'), 'utf8'),
        /** Stops the server; the data folder goes too unless `keep` (to restart on it). */
        async stop({ keep = false } = {}) {
            if (proc.exitCode === null) {
                const gone = new Promise((r) => proc.once('exit', r));
                proc.kill('SIGTERM');
                const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
                await gone;
                clearTimeout(t);
            }
            if (!keep && !process.env.KEEP_DATA) fs.rmSync(data, { recursive: true, force: true });
        },
    };
}

/** One Chromium process with a fresh profile, as a separate participant. */
async function launchBrowser({ viewport = { width: 1280, height: 720 }, extraArgs = [] } = {}) {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS.concat(extraArgs),
        viewport,
        permissions: ['camera', 'microphone'],
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
    page.on('console', (m) => {
        if (m.type() === 'error' && process.env.SHOW_CONSOLE) console.log(`[console] ${m.text()}`);
    });
    return {
        context, page,
        async close() {
            await context.close().catch(() => {});
            fs.rmSync(profile, { recursive: true, force: true });
        },
    };
}

/** Fills in the login form of /group/NAME/ and waits for the call screen (or returns the login error). */
async function join(page, server, { group = 'lobby', username, password = '', start = 'both', query = '', settings = null } = {}) {
    await page.goto(`${server.url}/group/${group}/${query}`);
    if (settings) {
        // As if chosen in an earlier visit: the page reads them at start.
        await page.evaluate((s) => localStorage.setItem('switchyard-settings', JSON.stringify(s)), settings);
        await page.reload();
    }
    await page.waitForSelector('#login-form', { state: 'visible' });
    if (username !== undefined) await page.fill('#username', username);
    if (password) await page.fill('#password', password);
    await page.check(`input[name="start"][value="${start}"]`);
    await page.click('#join-button');
    const which = await Promise.race([
        page.waitForSelector('#call', { state: 'visible', timeout: 20000 }).then(() => 'call'),
        page.waitForSelector('#login-error', { state: 'visible', timeout: 20000 }).then(() => 'error'),
    ]);
    if (which === 'error') return { joined: false, error: await page.textContent('#login-error') };
    return { joined: true };
}

/** inbound-rtp statistics of every down stream, read with RTCPeerConnection.getStats in the page. */
function inbound(page) {
    return page.evaluate(async () => {
        const out = [];
        const conn = window.switchyard.conn;
        if (!conn) return out;
        for (const s of conn.down.values()) {
            const report = await s.pc.getStats();
            report.forEach((r) => {
                if (r.type !== 'inbound-rtp') return;
                out.push({
                    stream: s.id, label: s.label, username: s.username, kind: r.kind,
                    packetsReceived: r.packetsReceived || 0, framesDecoded: r.framesDecoded || 0,
                    frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0,
                    bytesReceived: r.bytesReceived || 0,
                });
            });
        }
        return out;
    });
}

/** Polls `fn` until it returns a truthy value; fails with `what` after `ms`. */
async function until(what, fn, ms = 30000, every = 250) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last && last.message ? last.message : last)})`);
        await sleep(every);
    }
}

/** Waits until `page` decodes video from `username` and the frame count keeps rising; same for audio packets. */
async function waitMediaFrom(page, username, { label = 'camera', ms = 40000 } = {}) {
    const pick = (list, kind) => list.find((r) => r.username === username && r.label === label && r.kind === kind);
    let seen = [];
    const first = await until(`${label} video from ${username} decoded`, async () => {
        const list = await inbound(page);
        seen = list;
        const v = pick(list, 'video');
        return v && v.framesDecoded > 0 ? list : null;
    }, ms).catch((e) => {
        throw new Error(`${e.message}; inbound streams: ${JSON.stringify(seen)}`);
    });
    await sleep(1500);
    const second = await inbound(page);
    return {
        video: [pick(first, 'video'), pick(second, 'video')],
        audio: [pick(first, 'audio'), pick(second, 'audio')],
    };
}

/**
 * Serves the OWT protocol test page (tests/browser/owt/, with the vendored
 * Socket.IO client from node_modules) to `page` at SERVER/owt-test/, so it
 * is on the server's origin without the server knowing it.
 */
async function serveOwtPage(page, server) {
    const files = {
        'index.html': [path.join(__dirname, 'owt', 'index.html'), 'text/html; charset=utf-8'],
        'owt.js': [path.join(__dirname, 'owt', 'owt.js'), 'text/javascript; charset=utf-8'],
        'socket.io.min.js': [path.join(__dirname, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js'), 'text/javascript; charset=utf-8'],
    };
    await page.route(`${server.url}/owt-test/**`, (route) => {
        const name = new URL(route.request().url()).pathname.replace(/^\/owt-test\//, '');
        const f = files[name];
        if (!f) return route.fulfill({ status: 404, body: 'no such test file\n' });
        return route.fulfill({ status: 200, contentType: f[1], body: fs.readFileSync(f[0]) });
    });
}

/** The MAuth header of the OWT management API (reference section 15.2), signed with the service key. */
function mauth(serviceId, serviceKey) {
    const ts = Date.now();
    const cnonce = crypto.randomInt(0, 99999);
    const hex = crypto.createHmac('sha256', serviceKey).update(`${ts},${cnonce}`).digest('hex');
    return `MAuth realm=http://marte3.dit.upm.es,mauth_signature_method=HMAC_SHA256,mauth_serviceid=${serviceId},`
        + `mauth_cnonce=${cnonce},mauth_timestamp=${ts},mauth_signature=${Buffer.from(hex).toString('base64')}`;
}

/** An OWT login token for `user` in `room`, from the REST API with the keys the server generated in its data folder. */
async function owtToken(server, room, user, role = 'presenter') {
    const keysFile = path.join(server.data, 'owt-keys.json');
    const keys = await until('owt-keys.json', () => fs.existsSync(keysFile) && JSON.parse(fs.readFileSync(keysFile, 'utf8')), 10000);
    const r = await fetch(`${server.url}/v1/rooms/${encodeURIComponent(room)}/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: mauth(keys.service_id, keys.service_key) },
        body: JSON.stringify({ user, role }),
    });
    const body = await r.text();
    if (r.status !== 200) throw new Error(`token for ${user} in ${room}: ${r.status} ${body}`);
    return body;
}

function artifact(name) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    return path.join(ARTIFACTS, name);
}

module.exports = {
    ROOT, BIN, CHROMIUM_ARGS, sleep, freePort, startServer, launchBrowser, join, inbound, until,
    waitMediaFrom, artifact, serveOwtPage, owtToken,
};
