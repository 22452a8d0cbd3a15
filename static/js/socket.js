// The chat websocket (docs/websocket-protocol.md): one per tab, reconnecting by itself with capped exponential
// backoff and jitter. Sends that carry a client_msg_id are kept until the server acknowledges them (a `message`
// frame with the same client_msg_id, or an `error` refusing them) and are sent again after a reconnect; the
// server makes that idempotent. After every (re)connect the open conversation is subscribed to again.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 45000; // no frame at all for this long: the connection is dead, start over

export class ChatSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.subscribed = null; // conversation id the tab is looking at
    this.unacked = new Map(); // client_msg_id -> frame, in send order
    this.stops = new Set(); // conversations whose answer the user stopped while the socket was down
    this.closedByUs = false;
    this.everConnected = false;
    window.addEventListener("online", () => this.reconnectNow());
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      const reconnect = this.everConnected;
      this.attempt = 0;
      this.everConnected = true;
      this.lastFrameAt = Date.now();
      this.startHeartbeat();
      if (this.subscribed !== null) this.raw({ type: "subscribe", conversation_id: this.subscribed });
      for (const frame of this.unacked.values()) this.raw(frame);
      for (const id of this.stops) this.raw({ type: "stop", conversation_id: id });
      this.stops.clear();
      this.emit("status", { state: "open", reconnect });
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "message" && frame.message && frame.message.client_msg_id) {
        this.unacked.delete(frame.message.client_msg_id);
      }
      this.emit("frame", frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopHeartbeat();
      if (event.code === 4401) {
        this.emit("status", { state: "unauthenticated" });
        return;
      }
      if (this.closedByUs) return;
      this.emit("status", { state: "reconnecting" });
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.retryTimer !== null) return;
    const delay = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    this.attempt += 1;
    const jittered = delay / 2 + Math.random() * (delay / 2);
    this.retryTimer = setTimeout(() => this.connect(), jittered);
  }

  reconnectNow() {
    if (this.connected) return;
    this.attempt = 0;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this.connect();
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.pingTimer = setInterval(() => {
      if (!this.connected) return;
      if (Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
        // Half-open connection (laptop slept, network changed): drop it and reconnect.
        const ws = this.ws;
        this.ws = null;
        this.stopHeartbeat();
        ws.close();
        this.emit("status", { state: "reconnecting" });
        this.scheduleReconnect();
        return;
      }
      this.raw({ type: "ping" });
    }, PING_EVERY_MS);
  }

  stopHeartbeat() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  raw(frame) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a frame; one with a client_msg_id is remembered until acknowledged and re-sent after reconnects. A stop
   * asked for while the socket is down goes out once it is back (the answer runs on the server meanwhile). */
  send(frame) {
    if (frame.client_msg_id) this.unacked.set(frame.client_msg_id, frame);
    const sent = this.raw(frame);
    if (!sent && frame.type === "stop") this.stops.add(frame.conversation_id);
    return sent;
  }

  /** The server refused or failed a send: stop re-sending it. */
  forget(clientMsgId) {
    this.unacked.delete(clientMsgId);
  }

  subscribe(conversationId) {
    if (this.subscribed !== null && this.subscribed !== conversationId) {
      this.raw({ type: "unsubscribe", conversation_id: this.subscribed });
    }
    this.subscribed = conversationId;
    if (conversationId !== null) this.raw({ type: "subscribe", conversation_id: conversationId });
  }

  /** Resubscribe to get a fresh snapshot (after a seq gap). */
  resync() {
    if (this.subscribed !== null) this.raw({ type: "subscribe", conversation_id: this.subscribed });
  }

  /** For tests and debugging: drop the connection as a network failure would. */
  simulateDrop() {
    if (this.ws) this.ws.close(4000, "simulated drop");
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
