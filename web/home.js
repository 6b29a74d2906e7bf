// The home page: public rooms from /public-groups.json (Galène's list) and
// TV channels from /api/channels, refreshed every 15 seconds. A channel plays
// right here: the server sends it as live fragmented MP4 (/fmp4/channel/ID),
// which a plain <video src> plays.

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
}

function groupUrl(name) {
    return '/group/' + name.split('/').map(encodeURIComponent).join('/') + '/';
}

async function loadRooms() {
    const box = $('rooms');
    let groups;
    try {
        const r = await fetch('/public-groups.json', { cache: 'no-cache' });
        if (!r.ok) throw new Error('HTTP ' + r.status);
        groups = await r.json();
    } catch (e) {
        box.replaceChildren(el('p', { class: 'empty', text: 'Meetings are not available on this server.' }));
        box.removeAttribute('aria-busy');
        return;
    }
    $('rooms-note').textContent = groups.length ? `${groups.length} public` : '';
    if (!groups.length) {
        box.replaceChildren(el('p', { class: 'empty', text: 'No public rooms. Type a room name below to join one.' }));
    } else {
        box.replaceChildren(...groups.map((g) => {
            const n = g.clientCount || 0;
            return el('a', { class: 'room-card', href: groupUrl(g.name), 'data-name': g.name },
                el('span', { class: 'title', text: g.displayName || g.name },
                ),
                g.description ? el('span', { class: 'desc', text: g.description }) : null,
                el('span', { class: 'meta' },
                    el('span', { class: 'dot' + (n ? ' live' : '') }),
                    el('span', { class: 'count', text: n === 0 ? 'empty' : n === 1 ? '1 person' : `${n} people` }),
                    g.locked ? el('span', { class: 'badge warn', text: 'locked' }) : null));
        }));
    }
    box.removeAttribute('aria-busy');
}

function hhmm(unix) {
    return new Date(unix * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

async function loadChannels() {
    const box = $('channels');
    let channels;
    try {
        const r = await fetch('/api/channels', { cache: 'no-cache' });
        if (!r.ok) throw new Error('HTTP ' + r.status);
        channels = await r.json();
    } catch (e) {
        box.replaceChildren(el('p', { class: 'empty', text: 'TV is not available on this server.' }));
        box.removeAttribute('aria-busy');
        return;
    }
    $('channels-note').textContent = channels.length ? 'watch here, or open the stream link in VLC, mpv or ffplay' : '';
    if (!channels.length) {
        box.replaceChildren(el('p', { class: 'empty', text: 'No channels are configured.' }));
    } else {
        box.replaceChildren(...channels.map((c) => {
            const epg = (label, e) => e ? el('div', { class: 'epg' }, el('span', { class: 'time', text: `${label} ${hhmm(e.start)}` }), document.createTextNode(e.title)) : null;
            const stream = new URL(c.stream || `/stream/channel/${c.id}`, location.href).toString();
            return el('div', { class: 'channel-card', 'data-id': c.id },
                el('span', { class: 'title' }, el('span', { class: 'num', text: String(c.number) }), document.createTextNode(c.name)),
                epg('now', c.now) || el('div', { class: 'epg muted', text: 'No programme information' }),
                epg('next', c.next),
                el('div', { class: 'links' },
                    watchButton(c),
                    el('a', { href: `/watch/${c.id}`, text: 'Full page' }),
                    el('a', { href: stream, text: 'Stream' }),
                    el('a', { href: '/playlist', text: 'Playlist' })));
        }));
    }
    box.removeAttribute('aria-busy');
}

function watchButton(c) {
    const b = el('button', { type: 'button', class: 'button small primary watch', text: 'Watch' });
    b.addEventListener('click', () => watch(c));
    return b;
}

/** Plays channel `c` in the page's player; a stream that ends or fails is retried a few times. */
function watch(c) {
    const video = $('tv-video');
    let retries = 0;
    const start = () => {
        video.src = `/fmp4/channel/${c.id}`;
        video.play().catch(() => { /* the controls remain; autoplay may be refused */ });
    };
    const status = (text) => { $('tv-status').textContent = text; };
    video.onplaying = () => { retries = 0; status(''); };
    video.onwaiting = () => status('loading…');
    const again = () => {
        if (retries >= 3) { status('The channel can not be played right now.'); return; }
        retries += 1;
        status('reconnecting…');
        setTimeout(start, 1000 * retries);
    };
    video.onerror = again;
    video.onended = again;
    $('tv-title').textContent = `${c.number} ${c.name}`;
    $('tv-page').href = `/watch/${c.id}`;
    $('tv-player').hidden = false;
    $('tv-player').dataset.id = c.id;
    status('loading…');
    start();
    $('tv-player').scrollIntoView({ block: 'nearest' });
}

function stopWatching() {
    const video = $('tv-video');
    video.onerror = video.onended = null;
    video.removeAttribute('src');
    video.load();
    $('tv-player').hidden = true;
    delete $('tv-player').dataset.id;
}

document.addEventListener('DOMContentLoaded', () => {
    $('tv-close').addEventListener('click', stopWatching);
    $('join-other').addEventListener('submit', (e) => {
        e.preventDefault();
        const name = $('other-room').value.trim().replace(/^\/+|\/+$/g, '');
        if (name) location.href = groupUrl(name);
    });
    loadRooms();
    loadChannels();
    setInterval(() => { loadRooms(); loadChannels(); }, 15000);
});
