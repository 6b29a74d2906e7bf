// A minimal client of the OWT Client-Portal protocol 1.1 over Socket.IO (the
// messages of the reference, sections 5, 9-12), written for the browser
// tests: it is not the OWT SDK, and it keeps everything it hears for the
// test to inspect. The test drives it through `window.owt`.

'use strict';

(function () {
    const USER_AGENT = {
        sdk: { type: 'JavaScript', version: '4.3.1' },
        runtime: { name: 'Chrome', version: (navigator.userAgent.match(/Chrom(?:e|ium)\/([\d.]+)/) || [])[1] || 'Unknown' },
        os: { name: 'Linux', version: 'Unknown' },
    };

    const state = {
        socket: null,
        self: null,
        room: null,
        events: [],           // every notification: {name, data}
        streams: new Map(),   // stream id -> StreamInfo (from login and `stream` add/update/remove)
        sessions: new Map(),  // publication or subscription id -> {pc, kind, progress: []}
        waiters: [],
    };

    function setState(text) {
        document.getElementById('state').textContent = text;
    }

    function record(name, data) {
        state.events.push({ name, data });
        if (name === 'stream') {
            if (data.status === 'add') state.streams.set(data.id, data.data);
            else if (data.status === 'remove') state.streams.delete(data.id);
        }
        if (name === 'progress') {
            const s = state.sessions.get(data.id);
            if (s) s.progress.push(data);
        }
        state.waiters = state.waiters.filter((w) => !w());
    }

    /** Resolves with the first truthy value of `probe`, checked on every notification. */
    function waitFor(what, probe, ms = 20000) {
        return new Promise((resolve, reject) => {
            const first = probe();
            if (first) return resolve(first);
            const timer = setTimeout(() => {
                state.waiters = state.waiters.filter((w) => w !== check);
                reject(new Error(`timed out waiting for ${what}`));
            }, ms);
            function check() {
                const v = probe();
                if (v) { clearTimeout(timer); resolve(v); return true; }
                return false;
            }
            state.waiters.push(check);
        });
    }

    /** emit with an acknowledgement; the portal answers ("ok", data) or ("error", message). */
    function request(name, data) {
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no answer to ${name}`)), 15000);
            state.socket.emit(name, data, (status, result) => {
                clearTimeout(timer);
                if (status === 'ok' || status === 'success') resolve(result);
                else reject(new Error(`${name}: ${typeof result === 'string' ? result : JSON.stringify(result)}`));
            });
        });
    }

    async function login(token) {
        const socket = io(location.origin, { forceNew: true, reconnection: false });
        state.socket = socket;
        for (const name of ['participant', 'stream', 'text', 'progress', 'drop']) {
            socket.on(name, (data) => record(name, data));
        }
        socket.on('disconnect', (reason) => { record('disconnect', reason); setState('disconnected: ' + reason); });
        await new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('Socket.IO did not connect')), 15000);
            socket.once('connect', () => { clearTimeout(timer); resolve(); });
            socket.once('connect_error', (e) => { clearTimeout(timer); reject(e); });
        });
        const result = await request('login', { token, userAgent: USER_AGENT, protocol: '1.1' });
        state.self = result.id;
        state.room = result.room;
        for (const s of result.room.streams || []) state.streams.set(s.id, s);
        setState(`logged in as ${result.user} (${result.id})`);
        return result;
    }

    /**
     * Runs the offer/answer of one session (sections 11.2 and 12.2): our
     * offer without candidates, the portal's answer (its candidates inside),
     * then our candidates with the `a=` prefix, and finally `ready`.
     */
    async function negotiate(id, pc) {
        const session = { pc, progress: [] };
        state.sessions.set(id, session);
        // progress that arrived between the ack and now
        for (const e of state.events) if (e.name === 'progress' && e.data.id === id) session.progress.push(e.data);
        const candidates = [];
        let answered = false;
        const sendCandidate = (c) => request('soac', {
            id,
            signaling: { type: 'candidate', candidate: { candidate: 'a=' + c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } },
        });
        pc.onicecandidate = (e) => {
            if (!e.candidate || !e.candidate.candidate) return;
            if (answered) sendCandidate(e.candidate).catch((err) => record('error', err.message));
            else candidates.push(e.candidate);
        };
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        await request('soac', { id, signaling: { type: 'offer', sdp: offer.sdp } });
        const failed = () => session.progress.find((p) => p.status === 'error');
        const answer = await waitFor(`the answer for ${id}`, () => {
            const f = failed();
            if (f) return { error: f.data };
            return session.progress.find((p) => p.status === 'soac' && p.data && p.data.type === 'answer');
        });
        if (answer.error) throw new Error(`session ${id}: ${answer.error}`);
        await pc.setRemoteDescription({ type: 'answer', sdp: answer.data.sdp });
        answered = true;
        for (const c of candidates.splice(0)) await sendCandidate(c);
        const ready = await waitFor(`${id} ready`, () => {
            const f = failed();
            if (f) return { error: f.data };
            return session.progress.find((p) => p.status === 'ready');
        });
        if (ready.error) throw new Error(`session ${id}: ${ready.error}`);
        return session;
    }

    /** Publishes the (fake) camera and microphone; resolves with the stream id once `ready`. */
    async function publish({ label = 'camera' } = {}) {
        const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
        const v = media.getVideoTracks()[0];
        const settings = v.getSettings();
        const { id } = await request('publish', {
            media: {
                audio: { source: 'mic' },
                video: { source: 'camera', parameters: { resolution: { width: settings.width, height: settings.height }, framerate: Math.round(settings.frameRate || 30) } },
            },
            attributes: { label },
        });
        const pc = new RTCPeerConnection();
        for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
        const local = document.createElement('video');
        local.muted = true; local.autoplay = true; local.playsInline = true; local.srcObject = media;
        local.dataset.publication = id;
        document.getElementById('local').append(local);
        await negotiate(id, pc);
        state.sessions.get(id).kind = 'publication';
        setState(`publishing ${id}`);
        return id;
    }

    /** Subscribes to audio and video of stream `from`; resolves with the subscription id once `ready`. */
    async function subscribe(from, { simulcastRid } = {}) {
        const info = state.streams.get(from);
        if (!info) throw new Error(`no stream ${from} announced`);
        const video = info.media && info.media.video ? { from } : false;
        if (video && simulcastRid) video.simulcastRid = simulcastRid;
        const audio = info.media && info.media.audio ? { from } : false;
        const { id } = await request('subscribe', { media: { audio, video } });
        const pc = new RTCPeerConnection();
        if (audio) pc.addTransceiver('audio', { direction: 'recvonly' });
        if (video) pc.addTransceiver('video', { direction: 'recvonly' });
        const el = document.createElement('video');
        el.muted = true; el.autoplay = true; el.playsInline = true;
        el.dataset.subscription = id;
        document.getElementById('remote').append(el);
        pc.ontrack = (e) => {
            el.srcObject = e.streams[0] || new MediaStream([e.track]);
        };
        await negotiate(id, pc);
        state.sessions.get(id).kind = 'subscription';
        setState(`subscribed ${id} to ${from}`);
        return id;
    }

    /** inbound-rtp (subscriptions) or outbound-rtp (publications) counters of one session. */
    async function stats(id) {
        const s = state.sessions.get(id);
        if (!s) throw new Error(`no session ${id}`);
        const out = [];
        (await s.pc.getStats()).forEach((r) => {
            if (r.type !== 'inbound-rtp' && r.type !== 'outbound-rtp') return;
            out.push({
                type: r.type, kind: r.kind, rid: r.rid,
                packets: r.packetsReceived || r.packetsSent || 0,
                framesDecoded: r.framesDecoded || 0, framesEncoded: r.framesEncoded || 0,
                frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0,
            });
        });
        return out;
    }

    window.owt = {
        login, publish, subscribe, stats, request,
        streams: () => [...state.streams.values()],
        events: () => state.events.slice(),
        self: () => state.self,
    };
})();
