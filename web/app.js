// The meeting page (/group/NAME/): login, the video grid, controls, people,
// chat and operator tools, on top of the protocol library in galene.js.

import { GaleneConnection } from './galene.js';

const $ = (id) => document.getElementById(id);

const settings = loadSettings();
let status = {};
let conn = null;
let groupName = '';
let token = null;
let startWith = 'both';
const local = { camera: null, screen: null }; // {media: MediaStream, upId}
let micMuted = false;
let handRaised = false;
let unread = 0;
let activeTab = 'people';
let leaving = false;
const tiles = new Map(); // key -> tile record

// ---------- small helpers ----------

function loadSettings() {
    const defaults = { camera: '', mic: '', receive: 'all', simulcast: true, mirror: true, username: '' };
    try {
        return Object.assign(defaults, JSON.parse(localStorage.getItem('switchyard-settings') || '{}'));
    } catch (e) {
        return defaults;
    }
}

function saveSettings() {
    try { localStorage.setItem('switchyard-settings', JSON.stringify(settings)); } catch (e) { /* private mode */ }
}

function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
}

function icon(name, cls = 'icon') {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('class', cls);
    const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
    use.setAttribute('href', '#i-' + name);
    svg.append(use);
    return svg;
}

function setIcon(button, name) {
    const use = button.querySelector('use');
    if (use) use.setAttribute('href', '#i-' + name);
}

function initials(name) {
    const n = (name || '?').trim();
    const parts = n.split(/\s+/).filter(Boolean);
    const s = parts.length > 1 ? parts[0][0] + parts[1][0] : n.slice(0, 2);
    return (s || '?').toUpperCase();
}

function hue(name) {
    let h = 0;
    for (const c of name || '') h = (h * 31 + c.charCodeAt(0)) % 360;
    return h;
}

function toast(text, kind = 'info', ms = 5000) {
    const t = el('div', { class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status', text });
    $('toasts').append(t);
    setTimeout(() => t.classList.add('gone'), ms);
    setTimeout(() => t.remove(), ms + 400);
}

function show(screen) {
    for (const id of ['login', 'ended', 'call']) $(id).hidden = id !== screen;
}

function displayName() {
    return status.displayName || groupName;
}

// ---------- start-up ----------

async function init() {
    const params = new URLSearchParams(location.search);
    token = params.get('token');
    const m = location.pathname.match(/^\/group\/(.+)\/$/);
    groupName = m ? decodeURIComponent(m[1]) : '';
    try {
        const r = await fetch('.status', { cache: 'no-cache' });
        if (r.status === 404) return ended('This room does not exist', 'Check the address, or pick a room from the list.', false);
        if (!r.ok) throw new Error('HTTP ' + r.status);
        status = await r.json();
        if (status.name) groupName = status.name;
    } catch (e) {
        return ended('The server cannot be reached', String(e.message || e), true);
    }
    document.title = displayName() + ' · Switchyard';
    $('login-title').textContent = displayName();
    $('login-description').textContent = status.description || (token ? 'You were invited to this meeting.' : '');
    $('room-name').textContent = displayName();
    $('username').value = settings.username || '';
    if (token) $('password-field').hidden = true;
    show('login');
    $('username').focus();
}

function endpoint() {
    if (status.endpoint) return status.endpoint;
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

function ended(title, text, canRejoin) {
    $('ended-title').textContent = title;
    $('ended-text').textContent = text || '';
    $('rejoin-button').hidden = !canRejoin;
    show('ended');
}

// ---------- joining ----------

async function join(ev) {
    ev.preventDefault();
    const username = $('username').value.trim();
    const password = $('password').value;
    startWith = new FormData($('login-form')).get('start') || 'both';
    if (!username && !token) return loginError('Please enter your name.');
    settings.username = username;
    saveSettings();
    $('login-error').hidden = true;
    $('join-button').disabled = true;
    $('join-button').textContent = 'Joining…';
    try {
        conn = newConnection();
        try {
            await conn.connect(endpoint());
        } catch (e) {
            conn.close();
            return loginError('Cannot reach the server. Check your network and try again.');
        }
        const auth = token ? { token, username } : { username, password };
        const result = await conn.join(groupName, auth, handRaised ? { raisehand: true } : {});
        if (!result.ok) return loginError(result.text);
    } finally {
        $('join-button').disabled = false;
        $('join-button').textContent = 'Join';
    }
}

function loginError(text) {
    $('login-error').textContent = text;
    $('login-error').hidden = false;
    show('login');
}

function newConnection() {
    const c = new GaleneConnection();
    c.requested = receiveRequest();
    window.switchyard.conn = c;
    c.on('state', onState);
    c.on('joined', onJoined);
    c.on('user', onUser);
    c.on('chat', onChat);
    c.on('usermessage', onUserMessage);
    c.on('kicked', (by, text) => {
        stopAllLocal();
        ended('You were removed from the meeting', (by ? by + ': ' : '') + text, true);
    });
    c.on('joinfail', (text) => {
        // A rejoin after a reconnection can be refused too (room locked, full…).
        if (!firstJoin) {
            stopAllLocal();
            for (const k of [...tiles.keys()]) removeTile(k);
            ended('You could not rejoin the meeting', text, true);
        }
    });
    c.on('clearchat', onClearChat);
    c.on('mute', () => { setMicMuted(true); toast('An operator muted your microphone.', 'warning'); });
    c.on('downstream', onDownStream);
    c.on('track', onTrack);
    c.on('downclose', onDownClose);
    c.on('upclose', onUpClose);
    c.on('error', (t) => toast(t, 'error'));
    return c;
}

let firstJoin = true;

function onState(state, detail) {
    const pill = $('conn-state');
    pill.dataset.state = state;
    const labels = { connecting: 'connecting', connected: 'connecting', joined: 'connected', reconnecting: 'offline', closed: 'offline' };
    pill.textContent = labels[state] || state;
    document.body.classList.toggle('offline', state === 'reconnecting' || state === 'connecting');
    if (state === 'reconnecting') {
        banner(`Connection lost. Reconnecting in ${detail.delay} s…`, true);
    } else if (state === 'connecting' && !firstJoin) {
        banner('Reconnecting…', false);
    } else if (state === 'closed' && !leaving && $('call').hidden === false) {
        stopAllLocal();
        ended('Disconnected', 'The connection to the server was closed.', true);
    }
}

function banner(text, action) {
    $('banner-text').textContent = text;
    $('banner-action').hidden = !action;
    $('banner').hidden = !text;
}

function onJoined(m) {
    if (m.kind === 'join') {
        show('call');
        if (firstJoin) {
            firstJoin = false;
            startLocalMedia();
        } else {
            banner('', false);
            toast('Reconnected.', 'info', 2500);
            republish();
        }
        if (micMuted || handRaised) conn.setUserData({ muted: micMuted || null, raisehand: handRaised || null });
    }
    updateRoomState();
    updateControls();
    renderUsers();
}

function updateRoomState() {
    const st = conn.groupStatus || {};
    $('locked-badge').hidden = !st.locked;
    $('lock-button').textContent = st.locked ? 'Unlock room' : 'Lock room';
    $('op-tools').hidden = !conn.has('op') && !conn.has('record');
    for (const b of ['lock-button', 'clearchat-button']) $(b).hidden = !conn.has('op');
    $('record-button').hidden = !conn.has('record');
    $('invite-tools').hidden = !conn.has('token');
    const recording = [...conn.users.values()].some((u) => u.permissions.includes('system'));
    $('recording-badge').hidden = !recording;
    $('record-button').textContent = recording ? 'Stop recording' : 'Start recording';
}

// ---------- local media ----------

function canPresent() {
    return conn && conn.has('present');
}

async function startLocalMedia() {
    if (!canPresent() || startWith === 'none') return;
    await setCamera(startWith === 'both', true);
}

function constraints(video, audio) {
    return {
        audio: audio ? (settings.mic ? { deviceId: { exact: settings.mic } } : true) : false,
        video: video ? Object.assign({ width: { ideal: 640 }, height: { ideal: 480 } },
            settings.camera ? { deviceId: { exact: settings.camera } } : {}) : false,
    };
}

/** Publishes (or republishes with `replace`) the camera stream with the wanted tracks. */
async function setCamera(video, audio) {
    if (!canPresent()) return;
    const old = local.camera;
    const keepAudio = old && old.media.getAudioTracks().find((t) => t.readyState === 'live');
    const keepVideo = old && old.media.getVideoTracks().find((t) => t.readyState === 'live');
    let media;
    try {
        const needVideo = video && !keepVideo;
        const needAudio = audio && !keepAudio;
        const fresh = (needVideo || needAudio) ? await navigator.mediaDevices.getUserMedia(constraints(needVideo, needAudio)) : null;
        const tracks = [];
        if (audio) tracks.push(keepAudio || fresh.getAudioTracks()[0]);
        if (video) tracks.push(keepVideo || fresh.getVideoTracks()[0]);
        if (!video && keepVideo) keepVideo.stop();
        if (!audio && keepAudio) keepAudio.stop();
        media = new MediaStream(tracks.filter(Boolean));
    } catch (e) {
        toast('Cannot use the camera or microphone: ' + (e.message || e.name), 'error', 8000);
        if (video && audio) return setCamera(false, true).catch(() => {});
        return;
    }
    for (const t of media.getAudioTracks()) t.enabled = !micMuted;
    if (media.getTracks().length === 0) {
        if (old && old.upId) conn.unpublish(old.upId);
        local.camera = null;
        removeTile('local-camera');
    } else {
        local.camera = { media, upId: null };
        await publishLocal('camera', old && old.upId);
    }
    enumerateDevices();
    updateControls();
}

async function publishLocal(which, replace) {
    const l = local[which];
    if (!l || !conn || conn.state !== 'joined') return;
    const s = await conn.publish(which === 'camera' ? 'camera' : 'screenshare', l.media, {
        simulcast: which === 'camera' && settings.simulcast && l.media.getVideoTracks().length > 0,
        replace: replace || null,
    });
    l.upId = s.id;
    localTile(which);
}

function republish() {
    for (const which of ['camera', 'screen']) {
        const l = local[which];
        if (!l) continue;
        if (!l.media.getTracks().some((t) => t.readyState === 'live')) { local[which] = null; continue; }
        l.upId = null;
        publishLocal(which).catch((e) => toast('Cannot publish: ' + e, 'error'));
    }
}

function stopLocal(which) {
    const l = local[which];
    if (!l) return;
    if (l.upId && conn) conn.unpublish(l.upId);
    for (const t of l.media.getTracks()) t.stop();
    local[which] = null;
    removeTile('local-' + which);
    updateControls();
}

function stopAllLocal() {
    stopLocal('camera');
    stopLocal('screen');
}

function setMicMuted(muted) {
    micMuted = muted;
    if (local.camera) for (const t of local.camera.media.getAudioTracks()) t.enabled = !muted;
    if (conn && conn.state === 'joined') conn.setUserData({ muted: muted || null });
    updateControls();
}

async function toggleMic() {
    const hasAudio = local.camera && local.camera.media.getAudioTracks().length > 0;
    if (!hasAudio) {
        micMuted = false;
        await setCamera(!!(local.camera && local.camera.media.getVideoTracks().length), true);
        setMicMuted(false);
        return;
    }
    setMicMuted(!micMuted);
}

async function toggleCamera() {
    const hasVideo = !!(local.camera && local.camera.media.getVideoTracks().length);
    const hasAudio = !!(local.camera && local.camera.media.getAudioTracks().length);
    await setCamera(!hasVideo, hasAudio || !hasVideo);
}

async function toggleScreen() {
    if (local.screen) return stopLocal('screen');
    if (!navigator.mediaDevices.getDisplayMedia) return toast('This browser cannot share its screen.', 'error');
    let media;
    try {
        media = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (e) {
        if (e.name !== 'NotAllowedError') toast('Cannot share the screen: ' + (e.message || e.name), 'error');
        return;
    }
    local.screen = { media, upId: null };
    for (const t of media.getTracks()) t.addEventListener('ended', () => { if (local.screen && local.screen.media === media) stopLocal('screen'); });
    await publishLocal('screen');
    updateControls();
}

function toggleHand() {
    handRaised = !handRaised;
    conn.setUserData({ raisehand: handRaised || null });
    updateControls();
}

function updateControls() {
    const present = canPresent();
    const cam = local.camera;
    const hasVideo = !!(cam && cam.media.getVideoTracks().length);
    const hasAudio = !!(cam && cam.media.getAudioTracks().length);
    const micOn = hasAudio && !micMuted;
    for (const id of ['mic-button', 'cam-button', 'screen-button']) {
        $(id).disabled = !present;
        $(id).title = present ? $(id).getAttribute('aria-label') : 'You may not present in this room';
    }
    $('mic-button').setAttribute('aria-pressed', String(micOn));
    $('mic-button').classList.toggle('off', !micOn);
    setIcon($('mic-button'), micOn ? 'mic' : 'mic-off');
    $('mic-button').title = micOn ? 'Mute microphone' : 'Unmute microphone';
    $('cam-button').setAttribute('aria-pressed', String(hasVideo));
    $('cam-button').classList.toggle('off', !hasVideo);
    setIcon($('cam-button'), hasVideo ? 'cam' : 'cam-off');
    $('cam-button').title = hasVideo ? 'Turn camera off' : 'Turn camera on';
    $('screen-button').setAttribute('aria-pressed', String(!!local.screen));
    $('screen-button').classList.toggle('on', !!local.screen);
    $('screen-button').title = local.screen ? 'Stop sharing' : 'Share screen';
    $('hand-button').setAttribute('aria-pressed', String(handRaised));
    $('hand-button').classList.toggle('on', handRaised);
    const t = tiles.get('local-camera');
    if (t) updateTileState(t);
}

// ---------- devices and settings ----------

async function enumerateDevices() {
    let devices = [];
    try { devices = await navigator.mediaDevices.enumerateDevices(); } catch (e) { return; }
    const fill = (select, kind, current) => {
        select.replaceChildren(el('option', { value: '', text: 'Default' }));
        let n = 0;
        for (const d of devices.filter((x) => x.kind === kind)) {
            n++;
            select.append(el('option', { value: d.deviceId, text: d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${n}` }));
        }
        select.value = current;
        if (select.value !== current) select.value = '';
    };
    fill($('camera-select'), 'videoinput', settings.camera);
    fill($('mic-select'), 'audioinput', settings.mic);
}

function receiveRequest() {
    switch (settings.receive) {
    case 'low': return { '': ['audio', 'video-low'] };
    case 'audio': return { '': ['audio'] };
    case 'screenshare': return { screenshare: ['audio', 'video'], '': ['audio'] };
    case 'none': return { '': [] };
    default: return { '': ['audio', 'video'] };
    }
}

async function onSettingsChange(e) {
    const id = e.target.id;
    if (id === 'receive-select') {
        settings.receive = e.target.value;
        if (conn) conn.request(receiveRequest());
    } else if (id === 'camera-select' || id === 'mic-select') {
        const key = id === 'camera-select' ? 'camera' : 'mic';
        settings[key] = e.target.value;
        if (local.camera) {
            const hasVideo = local.camera.media.getVideoTracks().length > 0;
            const hasAudio = local.camera.media.getAudioTracks().length > 0;
            // Drop the track being switched so setCamera captures a new one.
            for (const t of key === 'camera' ? local.camera.media.getVideoTracks() : local.camera.media.getAudioTracks()) t.stop();
            await setCamera(hasVideo, hasAudio);
        }
    } else if (id === 'simulcast-check') {
        settings.simulcast = e.target.checked;
        if (local.camera && local.camera.upId) await publishLocal('camera', local.camera.upId);
    } else if (id === 'mirror-check') {
        settings.mirror = e.target.checked;
        const t = tiles.get('local-camera');
        if (t) t.video.classList.toggle('mirror', settings.mirror);
    }
    saveSettings();
}

// ---------- the grid ----------

function makeTile(key, { username, label, local: isLocal }) {
    const video = el('video', { autoplay: true, playsinline: true });
    video.muted = !!isLocal;
    const avatar = el('div', { class: 'avatar', text: initials(username) });
    avatar.style.setProperty('--hue', hue(username));
    const mic = icon('mic-off', 'icon sm');
    const name = el('div', { class: 'tile-name' }, mic, el('span', { text: username + (isLocal ? ' (you)' : '') + (label === 'screenshare' ? ' · screen' : '') }));
    const hand = el('div', { class: 'tile-hand', title: 'Hand raised' }, icon('hand', 'icon'));
    const tile = el('div', { class: 'tile' + (label === 'screenshare' ? ' screen' : ''), 'data-key': key, 'data-label': label, 'data-username': username }, avatar, video, name, hand);
    const t = { key, tile, video, avatar, mic, hand, username, label, local: !!isLocal, sourceId: null, streamId: null, small: null };
    tiles.set(key, t);
    $('grid').append(tile);
    if (!isLocal) {
        t.resize = new ResizeObserver(() => onTileResize(t));
        t.resize.observe(tile);
    }
    video.addEventListener('loadedmetadata', () => updateTileState(t));
    layoutGrid();
    return t;
}

function removeTile(key) {
    const t = tiles.get(key);
    if (!t) return;
    if (t.resize) t.resize.disconnect();
    t.video.srcObject = null;
    t.tile.remove();
    tiles.delete(key);
    layoutGrid();
    renderUsers();
}

function localTile(which) {
    const key = 'local-' + which;
    const l = local[which];
    let t = tiles.get(key);
    if (!t) t = makeTile(key, { username: conn.username || 'me', label: which === 'camera' ? 'camera' : 'screenshare', local: true });
    t.sourceId = conn.id;
    t.streamId = l.upId;
    if (t.video.srcObject !== l.media) t.video.srcObject = l.media;
    t.video.classList.toggle('mirror', which === 'camera' && settings.mirror);
    updateTileState(t);
}

function updateTileState(t) {
    let hasVideo = false;
    let hasAudio = false;
    const ms = t.video.srcObject;
    if (ms) {
        hasVideo = ms.getVideoTracks().some((x) => x.readyState === 'live');
        hasAudio = ms.getAudioTracks().some((x) => x.readyState === 'live');
    }
    const user = conn && conn.users.get(t.sourceId);
    const data = t.local ? { muted: micMuted, raisehand: handRaised } : (user ? user.data : {});
    t.tile.classList.toggle('no-video', !hasVideo);
    t.mic.style.display = (!hasAudio || data.muted) && t.label !== 'screenshare' ? '' : 'none';
    t.hand.hidden = !data.raisehand;
}

/**
 * Chooses the number of columns that makes tiles largest. Wide screens keep
 * tiles 16:9; phones let tiles fill their cells, since portrait screens
 * would otherwise waste most of their height.
 */
function layoutGrid() {
    const grid = $('grid');
    const n = tiles.size;
    $('empty-grid').hidden = n > 0;
    grid.dataset.count = n;
    if (n === 0) return;
    const cs = getComputedStyle(grid);
    const pad = parseFloat(cs.paddingLeft) || 0;
    const gap = parseFloat(cs.columnGap) || 8;
    const w = Math.max(1, grid.clientWidth - 2 * pad);
    const h = Math.max(1, grid.clientHeight - 2 * pad);
    const fill = window.innerWidth <= 760;
    let best = null;
    for (let cols = 1; cols <= n; cols++) {
        const rows = Math.ceil(n / cols);
        const cw = (w - gap * (cols - 1)) / cols;
        const ch = (h - gap * (rows - 1)) / rows;
        let tw, th;
        if (fill) {
            tw = cw; th = ch;
        } else {
            tw = Math.min(cw, ch * 16 / 9);
            th = tw * 9 / 16;
        }
        // Score by area, but on phones prefer shapes not too far from 4:3.
        const ratio = tw / th;
        const penalty = fill ? Math.min(1, Math.min(ratio, 1 / ratio) * 1.6) : 1;
        const score = tw * th * penalty;
        if (!best || score > best.score) best = { cols, rows, tw, th, score };
    }
    grid.style.setProperty('--cols', best.cols);
    grid.style.setProperty('--rows', best.rows);
    grid.style.setProperty('--tile-w', Math.floor(best.tw) + 'px');
    grid.style.setProperty('--tile-h', Math.floor(best.th) + 'px');
}

/** Small tiles ask for the low simulcast layer, as Galène's client does. */
function onTileResize(t) {
    if (!conn || !t.streamId || t.label === 'screenshare') return;
    const r = t.tile.getBoundingClientRect();
    const small = r.width <= 320 && r.height <= 240;
    if (small === t.small) return;
    t.small = small;
    if (settings.receive !== 'all') return;
    conn.requestStream(t.streamId, small ? ['audio', 'video-low'] : null);
}

function onDownStream(s) {
    let t = tiles.get(s.id);
    if (!t) {
        t = makeTile(s.id, { username: s.username || '(anonymous)', label: s.label });
    }
    t.sourceId = s.source;
    t.streamId = s.id;
    renderUsers();
}

function onTrack(s, e) {
    const t = tiles.get(s.id);
    if (!t) return;
    if (t.video.srcObject !== s.stream) t.video.srcObject = s.stream;
    e.track.addEventListener('ended', () => updateTileState(t));
    e.track.addEventListener('unmute', () => updateTileState(t));
    s.stream.addEventListener('removetrack', () => updateTileState(t));
    t.video.play().catch(() => { /* autoplay: the join click allows it */ });
    updateTileState(t);
}

function onDownClose(s, replacement) {
    const t = tiles.get(s.id);
    if (!t) return;
    if (replacement && !tiles.has(replacement.id)) {
        // The publisher switched streams: keep the tile where it is.
        tiles.delete(s.id);
        t.key = replacement.id;
        t.streamId = replacement.id;
        t.small = null;
        t.tile.dataset.key = replacement.id;
        tiles.set(replacement.id, t);
        return;
    }
    removeTile(s.id);
}

function onUpClose(s, why) {
    for (const which of ['camera', 'screen']) {
        const l = local[which];
        if (l && l.upId === s.id) {
            l.upId = null;
            if (why === 'aborted') {
                // Lost the right to present: stop capturing too.
                for (const t of l.media.getTracks()) t.stop();
                local[which] = null;
                removeTile('local-' + which);
                toast('You can no longer present in this room.', 'warning');
            }
        }
    }
    updateControls();
}

// ---------- people ----------

function renderUsers() {
    if (!conn) return;
    const list = $('user-list');
    const users = [...conn.users.values()].sort((a, b) => {
        if (a.id === conn.id) return -1;
        if (b.id === conn.id) return 1;
        return a.username.localeCompare(b.username);
    });
    $('people-count').textContent = users.length;
    const publishing = new Map();
    for (const t of tiles.values()) {
        if (!t.sourceId) continue;
        const set = publishing.get(t.sourceId) || new Set();
        set.add(t.label);
        publishing.set(t.sourceId, set);
    }
    list.replaceChildren(...users.map((u) => {
        const me = u.id === conn.id;
        const badges = el('span', { class: 'badges' });
        if (u.permissions.includes('op')) badges.append(el('span', { class: 'badge op', text: 'host' }));
        if (u.permissions.includes('system')) badges.append(el('span', { class: 'badge rec', text: 'recorder' }));
        else if (!u.permissions.includes('present')) badges.append(el('span', { class: 'badge', text: 'viewer' }));
        const st = el('span', { class: 'status-icons' });
        const pubs = publishing.get(u.id) || new Set();
        if (u.data.raisehand) st.append(el('span', { class: 'st hand', title: 'Hand raised' }, icon('hand', 'icon sm')));
        if (pubs.has('screenshare')) st.append(el('span', { class: 'st', title: 'Sharing the screen' }, icon('screen', 'icon sm')));
        if (pubs.size && [...pubs].some((l) => l !== 'screenshare')) st.append(el('span', { class: 'st', title: 'Camera or microphone on' }, icon('cam', 'icon sm')));
        if (u.data.muted) st.append(el('span', { class: 'st muted', title: 'Microphone muted' }, icon('mic-off', 'icon sm')));
        const avatar = el('span', { class: 'avatar small', text: initials(u.username) });
        avatar.style.setProperty('--hue', hue(u.username));
        const li = el('li', { class: 'user' + (me ? ' me' : ''), 'data-id': u.id, 'data-username': u.username },
            avatar,
            el('span', { class: 'user-name' }, el('span', { class: 'name', text: u.username || '(anonymous)' }), me ? el('span', { class: 'muted small', text: ' (you)' }) : null, badges),
            st);
        if (!me && conn.has('op') && !u.permissions.includes('system')) {
            li.append(el('button', { type: 'button', class: 'button ghost more', 'aria-label': 'Actions for ' + u.username, title: 'Actions', onclick: (e) => userMenu(e, u) }, icon('more', 'icon sm')));
        }
        return li;
    }));
    // The chat's recipient list follows the people list.
    const dest = $('chat-dest');
    const cur = dest.value;
    dest.replaceChildren(el('option', { value: '', text: 'Everyone' }),
        ...users.filter((u) => u.id !== conn.id && !u.permissions.includes('system')).map((u) => el('option', { value: u.id, text: u.username || '(anonymous)' })));
    dest.value = cur;
    if (dest.value !== cur) dest.value = '';
    for (const t of tiles.values()) updateTileState(t);
    updateRoomState();
}

function userMenu(ev, u) {
    ev.stopPropagation();
    const menu = $('menu');
    const item = (text, fn, danger) => el('button', { type: 'button', role: 'menuitem', class: 'menu-item' + (danger ? ' danger' : ''), text, onclick: () => { hideMenu(); fn(); } });
    const isOp = u.permissions.includes('op');
    const presents = u.permissions.includes('present');
    menu.replaceChildren(
        el('div', { class: 'menu-title', text: u.username || '(anonymous)' }),
        item('Ask to mute', () => conn.userMessage('mute', u.id, null)),
        item(presents ? 'Stop presenting' : 'Allow presenting', () => conn.userAction(presents ? 'unpresent' : 'present', u.id)),
        item(isOp ? 'Remove host rights' : 'Make host', () => conn.userAction(isOp ? 'unop' : 'op', u.id)),
        item('Send a private message', () => { $('chat-dest').value = u.id; openPanel('chat'); $('chat-input').focus(); }),
        item('Remove from meeting', () => conn.userAction('kick', u.id, 'you have been kicked out'), true),
    );
    menu.hidden = false;
    const r = ev.currentTarget.getBoundingClientRect();
    const mw = menu.offsetWidth;
    const mh = menu.offsetHeight;
    menu.style.left = Math.max(8, Math.min(window.innerWidth - mw - 8, r.right - mw)) + 'px';
    menu.style.top = Math.max(8, Math.min(window.innerHeight - mh - 8, r.bottom + 4)) + 'px';
}

function hideMenu() { $('menu').hidden = true; }

function onUser() {
    renderUsers();
}

// ---------- chat ----------

function formatTime(t) {
    const d = t ? new Date(t) : new Date();
    if (isNaN(d)) return '';
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function addMessage({ username, time, text, kind, priv, mine, system }) {
    const list = $('messages');
    const li = el('li', { class: 'msg' + (mine ? ' mine' : '') + (system ? ' system' : '') + (priv ? ' private' : '') + (kind === 'me' ? ' action' : '') });
    if (system) {
        li.append(el('span', { class: 'text', text }));
    } else {
        const head = el('div', { class: 'msg-head' },
            el('span', { class: 'from', text: username || '(anonymous)' }),
            priv ? el('span', { class: 'badge', text: priv }) : null,
            el('time', { class: 'muted small', text: formatTime(time) }));
        const body = el('div', { class: 'text', text: kind === 'me' ? `* ${username} ${text}` : text });
        li.append(head, body);
    }
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(li);
    while (list.children.length > 500) list.firstChild.remove();
    if (atBottom || mine) list.scrollTop = list.scrollHeight;
    if (activeTab !== 'chat' || $('panel').hidden) {
        unread++;
        $('unread').textContent = unread;
        $('unread').hidden = false;
    }
}

function onChat(m, fromHistory) {
    if (m.kind === 'caption') {
        toast(`${m.username || ''}: ${String(m.value)}`, 'caption', 6000);
        return;
    }
    const value = typeof m.value === 'string' ? m.value : JSON.stringify(m.value);
    addMessage({
        username: m.username, time: m.time, text: value, kind: m.kind,
        priv: m.dest ? 'private' : null, mine: !!conn && m.source === conn.id,
        id: m.id, history: fromHistory,
    });
}

function onClearChat(value) {
    if (!value) {
        $('messages').replaceChildren();
        addMessage({ system: true, text: 'The chat was cleared.' });
    }
}

function sendChat(ev) {
    ev.preventDefault();
    const input = $('chat-input');
    let text = input.value.trim();
    if (!text || !conn) return;
    let kind = '';
    if (text.startsWith('/me ')) { kind = 'me'; text = text.slice(4); }
    const dest = $('chat-dest').value;
    if (!conn.has('message')) {
        toast('You may not send messages in this room.', 'error');
        return;
    }
    conn.chat(text, { kind, dest });
    if (dest) {
        // Private messages are not echoed by the server.
        const u = conn.users.get(dest);
        addMessage({ username: conn.username, text, kind, priv: 'to ' + (u ? u.username : '?'), mine: true });
    }
    input.value = '';
}

function onUserMessage(m) {
    switch (m.kind) {
    case 'error': toast(String(m.value), 'error', 8000); break;
    case 'warning': toast(String(m.value), 'warning', 8000); break;
    case 'info': toast(String(m.value), 'info'); break;
    case 'token': onToken(m); break;
    case 'userinfo': if (m.value) toast(`${m.value.username || ''} connects from ${m.value.address || 'an unknown address'}`, 'info', 10000); break;
    default: break;
    }
}

function onToken(m) {
    if (m.error || !m.value || !m.value.token) {
        toast('Cannot create an invitation: ' + String(m.value || m.error), 'error');
        return;
    }
    const url = new URL(location.href);
    url.search = '?token=' + encodeURIComponent(m.value.token);
    const p = $('invite-link');
    p.replaceChildren(el('span', { text: 'Valid for 24 hours: ' }), el('a', { href: url.toString(), text: url.toString() }));
    p.hidden = false;
    if (navigator.clipboard) navigator.clipboard.writeText(url.toString()).then(() => toast('Invitation link copied.', 'info', 2500), () => {});
}

// ---------- panel ----------

function openPanel(tab) {
    activeTab = tab;
    $('panel').hidden = false;
    $('tab-people').hidden = tab !== 'people';
    $('tab-chat').hidden = tab !== 'chat';
    for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === tab);
    document.body.classList.add('panel-open');
    if (tab === 'chat') {
        unread = 0;
        $('unread').hidden = true;
        const list = $('messages');
        list.scrollTop = list.scrollHeight;
    }
    requestAnimationFrame(layoutGrid);
}

function togglePanel(tab) {
    if (!$('panel').hidden && activeTab === tab) {
        $('panel').hidden = true;
        document.body.classList.remove('panel-open');
        requestAnimationFrame(layoutGrid);
    } else {
        openPanel(tab);
    }
}

// ---------- wiring ----------

function leave() {
    leaving = true;
    stopAllLocal();
    if (conn) conn.leave();
    for (const k of [...tiles.keys()]) removeTile(k);
    ended('You left the meeting', displayName(), true);
}

function rejoin() {
    leaving = false;
    firstJoin = true;
    for (const k of [...tiles.keys()]) removeTile(k);
    $('messages').replaceChildren();
    unread = 0;
    $('unread').hidden = true;
    if (conn) { conn.close(); conn = null; }
    show('login');
}

window.switchyard = { conn: null, tiles, local, layoutGrid };

document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', join);
    $('rejoin-button').addEventListener('click', rejoin);
    $('mic-button').addEventListener('click', () => toggleMic().catch((e) => toast(String(e), 'error')));
    $('cam-button').addEventListener('click', () => toggleCamera().catch((e) => toast(String(e), 'error')));
    $('screen-button').addEventListener('click', () => toggleScreen().catch((e) => toast(String(e), 'error')));
    $('hand-button').addEventListener('click', toggleHand);
    $('leave-button').addEventListener('click', leave);
    $('settings-button').addEventListener('click', () => {
        enumerateDevices();
        $('receive-select').value = settings.receive;
        $('simulcast-check').checked = settings.simulcast;
        $('mirror-check').checked = settings.mirror;
        $('settings').showModal();
    });
    $('settings-form').addEventListener('change', (e) => onSettingsChange(e).catch((x) => toast(String(x), 'error')));
    $('people-button').addEventListener('click', () => togglePanel('people'));
    $('chat-button').addEventListener('click', () => togglePanel('chat'));
    $('panel-close').addEventListener('click', () => togglePanel(activeTab));
    for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => openPanel(b.dataset.tab));
    $('chat-form').addEventListener('submit', sendChat);
    $('banner-action').addEventListener('click', () => conn && conn.reconnectNow());
    $('lock-button').addEventListener('click', () => {
        if (conn.groupStatus.locked) conn.groupAction('unlock');
        else conn.groupAction('lock', 'The room is locked.');
    });
    $('record-button').addEventListener('click', () => {
        const recording = [...conn.users.values()].some((u) => u.permissions.includes('system'));
        conn.groupAction(recording ? 'unrecord' : 'record');
    });
    $('clearchat-button').addEventListener('click', () => conn.groupAction('clearchat'));
    $('invite-button').addEventListener('click', () => conn.groupAction('maketoken', {
        group: conn.group, permissions: conn.permissions.filter((p) => p === 'present' || p === 'message'), expires: 86400000,
    }));
    document.addEventListener('click', (e) => { if (!$('menu').contains(e.target)) hideMenu(); });
    window.addEventListener('resize', layoutGrid);
    new ResizeObserver(layoutGrid).observe($('grid'));
    if (window.innerWidth > 900) openPanel('people');
    init();
});
