// The Galène protocol (version "2") as a browser library: one WebSocket to
// the server, the handshake, keepalive, join/leave, chat and user messages,
// moderation actions, and one RTCPeerConnection per stream (up streams we
// offer, down streams the server offers). It knows nothing about the page;
// the UI listens to its events. It reconnects with backoff when the socket
// drops and rejoins with the same credentials.

const PROTOCOL = '2';

/** 16 random bytes as 32 lowercase hex digits, as Galène clients use for ids. */
export function randomId() {
    const a = new Uint8Array(16);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Join failures the server reports with these texts get friendlier words. */
export function explainJoinFailure(value, error) {
    const v = String(value || '');
    if (error === 'need-username') return 'This invitation needs a username: please choose one.';
    if (error === 'duplicate-username') return 'That username is taken by a registered user: please choose another.';
    if (v === 'not authorised') return 'Wrong username or password.';
    if (v === 'too many users') return 'The room is full. Please try again later.';
    if (v === 'group does not exist') return 'This room does not exist.';
    if (v === 'this group is not open yet') return 'This room is not open yet.';
    if (v === 'this group is closed') return 'This room is closed.';
    if (v === 'there are no operators in this group') return 'The room has no operator yet. Please wait for one to arrive.';
    return 'The server said: ' + v;
}

class Emitter {
    constructor() { this.handlers = new Map(); }
    on(name, fn) {
        if (!this.handlers.has(name)) this.handlers.set(name, []);
        this.handlers.get(name).push(fn);
        return this;
    }
    emit(name, ...args) {
        for (const fn of this.handlers.get(name) || []) {
            try { fn(...args); } catch (e) { console.error(`handler for ${name}:`, e); }
        }
    }
}

/**
 * One stream: a PeerConnection in one direction. `up` streams are ours
 * (we offer), down streams come from another member (the server offers).
 */
export class Stream {
    constructor(conn, id, up, pc) {
        this.conn = conn;
        this.id = id;
        this.up = up;
        this.pc = pc;
        this.label = '';
        this.source = '';
        this.username = '';
        this.stream = null; // MediaStream: local for up, remote for down
        this.localCandidates = [];
        this.remoteCandidates = [];
        this.negotiated = false; // an offer/answer has been sent by us
        this.closed = false;
        this.request = null; // requestStream override for down streams
        this.simulcast = false;
    }

    async flushRemoteCandidates() {
        const list = this.remoteCandidates;
        this.remoteCandidates = [];
        for (const c of list) {
            try { await this.pc.addIceCandidate(c); } catch (e) { console.warn('addIceCandidate', e); }
        }
    }

    flushLocalCandidates() {
        const list = this.localCandidates;
        this.localCandidates = [];
        for (const c of list) this.conn.send({ type: 'ice', id: this.id, candidate: c });
    }
}

/**
 * A connection to a Galène server. Events:
 *  state(state, detail)   'connecting' | 'connected' | 'joined' | 'reconnecting' | 'closed'
 *  joined(msg)            joined kind join / change / leave
 *  joinfail(text, msg)    join refused (socket closed, no reconnect)
 *  user(kind, user)       add / change / delete; user = {id, username, permissions, data}
 *  chat(msg, fromHistory)
 *  usermessage(msg)       privileged error / warning / info / token / userinfo ...
 *  kicked(by, text)
 *  clearchat(value)
 *  mute()                 an operator asks us to mute the microphone
 *  downstream(stream)     a down stream was created or renegotiated
 *  track(stream, event)   a remote track arrived
 *  downclose(stream, replacedBy)
 *  upclose(stream, why)   an up stream was aborted by the server
 *  error(text)
 */
export class GaleneConnection extends Emitter {
    constructor() {
        super();
        this.socket = null;
        this.id = null;
        this.state = 'closed';
        this.username = null;
        this.permissions = [];
        this.groupStatus = {};
        this.groupData = {};
        this.rtcConfiguration = null;
        this.users = new Map();
        this.up = new Map();
        this.down = new Map();
        this.requested = { '': ['audio', 'video'] };
        this.joinParams = null;
        this.endpoint = null;
        this.wantOpen = false;
        this.backoff = 0;
        this.reconnectTimer = null;
        this.keepaliveTimer = null;
        this.lastHeard = 0;
        this.handshaken = false;
        this.joinedOnce = false;
    }

    /** Opens the socket and handshakes; resolves once the server's handshake arrives. */
    connect(endpoint) {
        this.endpoint = endpoint;
        this.wantOpen = true;
        return this.open();
    }

    open() {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        this.setState('connecting');
        // A fresh id per socket: after a silent drop the server may still
        // hold the old client for a while and would refuse the same id.
        this.id = randomId();
        this.handshaken = false;
        const socket = new WebSocket(this.endpoint);
        this.socket = socket;
        return new Promise((resolve, reject) => {
            let settled = false;
            socket.onopen = () => {
                this.lastHeard = Date.now();
                this.send({ type: 'handshake', version: [PROTOCOL], id: this.id });
                this.startKeepalive();
            };
            socket.onmessage = (e) => {
                if (socket !== this.socket) return;
                this.lastHeard = Date.now();
                let m;
                try { m = JSON.parse(e.data); } catch (err) {
                    console.warn('bad JSON from server', err);
                    return;
                }
                if (!this.handshaken) {
                    if (m.type !== 'handshake' || !Array.isArray(m.version) || !m.version.includes(PROTOCOL)) {
                        this.emit('error', "The server didn't answer with a Galène version 2 handshake.");
                        this.socket.close(1000, 'protocol error');
                        return;
                    }
                    this.handshaken = true;
                    this.setState('connected');
                    if (!settled) { settled = true; resolve(); }
                    if (this.joinParams) this.sendJoin();
                    return;
                }
                this.dispatch(m);
            };
            socket.onclose = (e) => {
                if (socket !== this.socket) return;
                this.stopKeepalive();
                this.teardownStreams();
                this.socket = null;
                if (!settled) { settled = true; reject(new Error('could not connect to the server')); }
                if (this.wantOpen) {
                    this.scheduleReconnect(e);
                } else {
                    this.setState('closed', { code: e.code, reason: e.reason });
                }
            };
            socket.onerror = () => { /* onclose follows */ };
        });
    }

    setState(state, detail) {
        this.state = state;
        this.emit('state', state, detail || {});
    }

    scheduleReconnect(e) {
        const delays = [1, 2, 4, 8, 15, 30];
        const delay = delays[Math.min(this.backoff, delays.length - 1)];
        this.backoff++;
        this.users.clear();
        this.setState('reconnecting', { delay, code: e && e.code, reason: e && e.reason });
        this.reconnectTimer = setTimeout(() => {
            this.open().catch(() => { /* onclose reschedules */ });
        }, delay * 1000);
    }

    /** Reconnects now instead of waiting for the backoff timer. */
    reconnectNow() {
        if (this.state === 'reconnecting') this.open().catch(() => {});
    }

    /** Closes for good: no reconnection. */
    close() {
        this.wantOpen = false;
        this.joinParams = null;
        clearTimeout(this.reconnectTimer);
        this.teardownStreams(true);
        if (this.socket) {
            this.socket.close(1000, 'Close requested by client');
        } else {
            this.setState('closed', {});
        }
    }

    startKeepalive() {
        this.stopKeepalive();
        const opened = Date.now();
        this.keepaliveTimer = setInterval(() => {
            const silent = Date.now() - this.lastHeard;
            if (!this.handshaken && Date.now() - opened >= 10000) {
                this.socket && this.socket.close(4000, 'Timeout');
            } else if (silent >= 65000) {
                this.socket && this.socket.close(4000, 'Timeout');
            } else if (silent >= 15000) {
                this.send({ type: 'ping' });
            }
        }, 10000);
    }

    stopKeepalive() {
        clearInterval(this.keepaliveTimer);
        this.keepaliveTimer = null;
    }

    send(m) {
        if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
        this.socket.send(JSON.stringify(m));
        return true;
    }

    /**
     * Joins a group; `auth` is {username, password} or {token, username?}.
     * Resolves on the first `joined` answer (join or fail).
     */
    join(group, auth, data) {
        this.joinParams = { group, auth, data };
        this.joinedOnce = false;
        return new Promise((resolve) => {
            this.pendingJoin = resolve;
            if (this.handshaken) this.sendJoin();
        });
    }

    sendJoin() {
        const { group, auth, data } = this.joinParams;
        const m = { type: 'join', kind: 'join', group };
        if (auth.token) {
            m.token = auth.token;
            if (auth.username) m.username = auth.username;
        } else {
            m.username = auth.username || '';
            m.password = auth.password || '';
        }
        if (data && Object.keys(data).length) m.data = data;
        this.send(m);
    }

    leave() {
        if (this.joinParams) this.send({ type: 'join', kind: 'leave', group: this.joinParams.group });
        this.close();
    }

    get group() { return this.joinParams ? this.joinParams.group : null; }

    has(perm) { return this.permissions.includes(perm); }

    dispatch(m) {
        switch (m.type) {
        case 'handshake': break;
        case 'ping': this.send({ type: 'pong' }); break;
        case 'pong': break;
        case 'joined': this.onJoined(m); break;
        case 'user': this.onUser(m); break;
        case 'chat': this.emit('chat', m, false); break;
        case 'chathistory': this.emit('chat', m, true); break;
        case 'usermessage': this.onUserMessage(m); break;
        case 'offer': this.onOffer(m).catch((e) => this.failStream(m.id, e)); break;
        case 'answer': this.onAnswer(m).catch((e) => this.failStream(m.id, e)); break;
        case 'ice': this.onIce(m); break;
        case 'renegotiate': this.onRenegotiate(m); break;
        case 'close': this.onClose(m); break;
        case 'abort': this.onAbort(m); break;
        default: console.warn('unexpected message from server', m.type);
        }
    }

    onJoined(m) {
        switch (m.kind) {
        case 'join':
        case 'change':
            if (m.kind === 'join') {
                this.backoff = 0;
                this.joinedOnce = true;
                this.users.clear();
                this.username = m.username || '';
            }
            this.permissions = m.permissions || [];
            this.groupStatus = Object.assign({}, this.groupStatus, m.status || {});
            if (m.status) this.groupStatus.locked = !!m.status.locked;
            if (m.data) this.groupData = m.data;
            if (m.rtcConfiguration) this.rtcConfiguration = m.rtcConfiguration;
            if (m.kind === 'join') {
                this.setState('joined');
                this.sendRequest();
                if (this.pendingJoin) { this.pendingJoin({ ok: true }); this.pendingJoin = null; }
            }
            this.emit('joined', m);
            break;
        case 'fail': {
            const text = explainJoinFailure(m.value, m.error);
            this.joinParams = null;
            this.wantOpen = false;
            if (this.socket) this.socket.close(1000, 'join failed');
            if (this.pendingJoin) { this.pendingJoin({ ok: false, text, error: m.error, value: m.value }); this.pendingJoin = null; }
            this.emit('joinfail', text, m);
            break;
        }
        case 'redirect':
            this.close();
            if (m.value) window.location.href = m.value;
            break;
        case 'leave':
            this.emit('joined', m);
            break;
        default:
            console.warn('unknown joined kind', m.kind);
        }
    }

    onUser(m) {
        const user = { id: m.id, username: m.username || '', permissions: m.permissions || [], data: m.data || {} };
        if (m.kind === 'add' || m.kind === 'change') {
            this.users.set(m.id, user);
            if (m.id === this.id) this.permissions = user.permissions;
        } else if (m.kind === 'delete') {
            this.users.delete(m.id);
        }
        this.emit('user', m.kind, user);
    }

    onUserMessage(m) {
        // Control messages count only when the server vouches for them.
        if (!m.privileged) {
            if (['error', 'warning', 'info', 'kicked', 'mute', 'clearchat', 'token', 'tokenlist', 'userinfo'].includes(m.kind)) {
                console.warn('unprivileged control message ignored', m);
                return;
            }
            this.emit('usermessage', m);
            return;
        }
        switch (m.kind) {
        case 'kicked':
            this.wantOpen = false;
            this.joinParams = null;
            this.emit('kicked', m.username || '', m.value ? String(m.value) : 'you have been kicked out');
            break;
        case 'clearchat': this.emit('clearchat', m.value || null); break;
        case 'mute': this.emit('mute'); break;
        default: this.emit('usermessage', m);
        }
    }

    // ---- requests ----

    /** Which labels we want and how: e.g. {'': ['audio', 'video']}. */
    request(what) {
        this.requested = what;
        this.sendRequest();
    }

    sendRequest() {
        if (this.state === 'joined') this.send({ type: 'request', request: this.requested });
    }

    /** Overrides the selection of one down stream (null: back to the label rule). */
    requestStream(id, list) {
        const s = this.down.get(id);
        if (!s) return;
        s.request = list;
        this.send({ type: 'requestStream', id, request: list });
    }

    // ---- chat and actions ----

    chat(value, { kind = '', dest = '' } = {}) {
        const m = { type: 'chat', source: this.id, username: this.username, value };
        if (kind) m.kind = kind;
        if (dest) m.dest = dest;
        return this.send(m);
    }

    userMessage(kind, dest, value, noecho) {
        const m = { type: 'usermessage', kind, source: this.id, username: this.username, value };
        if (dest) m.dest = dest;
        if (noecho) m.noecho = true;
        return this.send(m);
    }

    userAction(kind, dest, value) {
        const m = { type: 'useraction', kind, source: this.id, username: this.username, dest };
        if (value !== undefined && value !== null) m.value = value;
        return this.send(m);
    }

    groupAction(kind, value) {
        const m = { type: 'groupaction', kind, source: this.id, username: this.username };
        if (value !== undefined && value !== null) m.value = value;
        return this.send(m);
    }

    /** Merges keys into our user data (null deletes); everybody sees it. */
    setUserData(values) {
        return this.userAction('setdata', this.id, values);
    }

    // ---- streams ----

    newPeerConnection() {
        return new RTCPeerConnection(this.rtcConfiguration || {});
    }

    /**
     * Publishes a local MediaStream under `label`. With `simulcast`, video is
     * sent as two encodings, rids h (full) then l (half size, 100 kbit/s).
     * `replace` names an up stream this one takes over from.
     */
    async publish(label, mediaStream, { simulcast = false, replace = null, maxBitrate = 0 } = {}) {
        const id = randomId();
        const pc = this.newPeerConnection();
        const s = new Stream(this, id, true, pc);
        s.label = label;
        s.stream = mediaStream;
        s.simulcast = simulcast;
        s.username = this.username;
        s.source = this.id;
        this.up.set(id, s);
        pc.onicecandidate = (e) => {
            if (!e.candidate) return;
            if (s.negotiated) this.send({ type: 'ice', id, candidate: e.candidate.toJSON() });
            else s.localCandidates.push(e.candidate.toJSON());
        };
        pc.oniceconnectionstatechange = () => {
            if (pc.iceConnectionState === 'failed' && !s.closed) {
                this.reoffer(s, true).catch((e) => console.warn('ice restart', e));
            }
        };
        for (const t of mediaStream.getTracks()) {
            const init = { direction: 'sendonly', streams: [mediaStream] };
            if (t.kind === 'video') {
                if (simulcast) {
                    init.sendEncodings = [
                        { rid: 'h', ...(maxBitrate ? { maxBitrate } : {}) },
                        { rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 100000 },
                    ];
                } else if (maxBitrate) {
                    init.sendEncodings = [{ maxBitrate }];
                }
            }
            pc.addTransceiver(t, init);
        }
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        const m = {
            type: 'offer', kind: '', id, label, source: this.id, username: this.username,
            sdp: pc.localDescription.sdp,
        };
        if (replace) {
            m.replace = replace;
            const old = this.up.get(replace);
            if (old) { old.closed = true; old.pc.close(); this.up.delete(replace); }
        }
        this.send(m);
        s.negotiated = true;
        s.flushLocalCandidates();
        return s;
    }

    async reoffer(s, iceRestart) {
        const offer = await s.pc.createOffer(iceRestart ? { iceRestart: true } : {});
        await s.pc.setLocalDescription(offer);
        this.send({
            type: 'offer', kind: 'renegotiate', id: s.id, label: s.label, source: this.id,
            username: this.username, sdp: s.pc.localDescription.sdp,
        });
    }

    /** Stops publishing an up stream. */
    unpublish(id) {
        const s = this.up.get(id);
        if (!s) return;
        s.closed = true;
        this.up.delete(id);
        s.pc.close();
        this.send({ type: 'close', id });
    }

    async onAnswer(m) {
        const s = this.up.get(m.id);
        if (!s) { console.warn('answer for unknown stream', m.id); return; }
        await s.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
        await s.flushRemoteCandidates();
    }

    async onOffer(m) {
        if (this.up.has(m.id)) {
            // An id can not be both directions; refuse.
            this.send({ type: 'abort', id: m.id });
            return;
        }
        let s = this.down.get(m.id);
        const fresh = !s;
        if (fresh) {
            const pc = this.newPeerConnection();
            s = new Stream(this, m.id, false, pc);
            this.down.set(m.id, s);
            pc.onicecandidate = (e) => {
                if (!e.candidate) return;
                if (s.negotiated) this.send({ type: 'ice', id: s.id, candidate: e.candidate.toJSON() });
                else s.localCandidates.push(e.candidate.toJSON());
            };
            pc.oniceconnectionstatechange = () => {
                if (pc.iceConnectionState === 'failed' && !s.closed) this.send({ type: 'renegotiate', id: s.id });
            };
            pc.ontrack = (e) => {
                const ms = e.streams && e.streams[0];
                if (!ms) { console.warn('remote track without a stream, dropped'); return; }
                s.stream = ms;
                this.emit('track', s, e);
            };
        }
        s.label = m.label || '';
        s.source = m.source || '';
        s.username = m.username || '';
        if (fresh && m.replace) {
            const old = this.down.get(m.replace);
            if (old) {
                old.closed = true;
                old.pc.close();
                this.down.delete(m.replace);
                this.emit('downclose', old, s);
            }
        }
        this.emit('downstream', s);
        await s.pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
        await s.flushRemoteCandidates();
        const answer = await s.pc.createAnswer();
        await s.pc.setLocalDescription(answer);
        this.send({ type: 'answer', id: s.id, sdp: s.pc.localDescription.sdp });
        s.negotiated = true;
        s.flushLocalCandidates();
    }

    onIce(m) {
        const s = this.up.get(m.id) || this.down.get(m.id);
        if (!s || !m.candidate) return;
        if (s.pc.remoteDescription) {
            s.pc.addIceCandidate(m.candidate).catch((e) => console.warn('addIceCandidate', e));
        } else {
            s.remoteCandidates.push(m.candidate);
        }
    }

    onRenegotiate(m) {
        const s = this.up.get(m.id);
        if (s) this.reoffer(s, true).catch((e) => console.warn('renegotiate', e));
    }

    onClose(m) {
        const s = this.down.get(m.id);
        if (!s) return;
        s.closed = true;
        s.pc.close();
        this.down.delete(m.id);
        this.emit('downclose', s, null);
    }

    onAbort(m) {
        const s = this.up.get(m.id);
        if (!s) return;
        s.closed = true;
        s.pc.close();
        this.up.delete(m.id);
        this.send({ type: 'close', id: m.id });
        this.emit('upclose', s, 'aborted');
    }

    failStream(id, e) {
        console.error('negotiation failed for', id, e);
        const up = this.up.get(id);
        if (up) {
            this.unpublish(id);
            this.emit('upclose', up, String(e));
        } else if (this.down.has(id)) {
            const s = this.down.get(id);
            s.closed = true;
            s.pc.close();
            this.down.delete(id);
            this.send({ type: 'abort', id });
            this.emit('downclose', s, null);
        }
        this.emit('error', 'Negotiation failed: ' + (e && e.message ? e.message : e));
    }

    /** Drops every PeerConnection (the socket is gone: the server forgot them). */
    teardownStreams() {
        for (const s of this.down.values()) {
            s.closed = true;
            s.pc.close();
            this.emit('downclose', s, null);
        }
        this.down.clear();
        for (const s of this.up.values()) {
            s.closed = true;
            s.pc.close();
            this.emit('upclose', s, 'disconnected');
        }
        this.up.clear();
    }
}
