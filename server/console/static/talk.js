// Talk to your agent: a test call from this page, speaking Twilio's Media Streams protocol on the
// server's media websocket, as a phone call's stream does. The audio itself is the worklet's
// (talk-worklet.js): 20 ms μ-law frames up, the agent's audio, marks and clears down.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("talk");
  if (!root || !root.dataset.startUrl) { return; }
  var labels = JSON.parse(document.getElementById("talk-labels").textContent);
  var startButton = document.getElementById("talk-start");
  var hangUpButton = document.getElementById("talk-hang-up");
  var status = document.getElementById("talk-status");
  var callLink = document.getElementById("talk-call-link");
  var transcript = document.getElementById("talk-transcript");
  var micMeter = document.getElementById("talk-mic-level");
  var agentMeter = document.getElementById("talk-agent-level");
  var call = null; // the call under way: its context, microphone, socket and figures

  function show(state, message) {
    root.dataset.state = state;
    status.textContent = message || labels["talk_state_" + state];
    var busy = state === "asking" || state === "connecting" || state === "live" || state === "ending";
    startButton.disabled = busy;
    hangUpButton.disabled = !(state === "connecting" || state === "live");
  }

  function toBase64(bytes) {
    var text = "";
    for (var i = 0; i < bytes.length; i++) { text += String.fromCharCode(bytes[i]); }
    return btoa(text);
  }

  function fromBase64(text) {
    var raw = atob(text);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes;
  }

  function level(analyser, buffer) {
    analyser.getFloatTimeDomainData(buffer);
    var sum = 0;
    for (var i = 0; i < buffer.length; i++) { sum += buffer[i] * buffer[i]; }
    return Math.sqrt(sum / buffer.length);
  }

  function measure(current) {
    // The levels the meters show; the page keeps the agent's, so a test can read what reached it.
    var mic = level(current.micAnalyser, current.buffer);
    var agent = level(current.agentAnalyser, current.buffer);
    micMeter.value = Math.min(1, mic * 4);
    agentMeter.value = Math.min(1, agent * 4);
    root.dataset.agentLevel = agent.toFixed(4);
    if (agent > Number(root.dataset.agentPeak)) { root.dataset.agentPeak = agent.toFixed(4); }
    if (mic > Number(root.dataset.micPeak)) { root.dataset.micPeak = mic.toFixed(4); }
    root.dataset.mediaSent = String(current.sent);
    root.dataset.mediaReceived = String(current.received);
    root.dataset.marksEchoed = String(current.marksEchoed);
    root.dataset.clears = String(current.clears);
  }

  function send(current, message) {
    if (current.socket.readyState !== WebSocket.OPEN) { return; }
    current.sequence += 1;
    message.sequenceNumber = String(current.sequence);
    message.streamSid = current.streamSid;
    current.socket.send(JSON.stringify(message));
  }

  function fromServer(current, text) {
    var message;
    try { message = JSON.parse(text); } catch (error) { return; }
    if (message.event === "media" && message.media && typeof message.media.payload === "string") {
      var audio = fromBase64(message.media.payload);
      current.received += 1;
      current.node.port.postMessage({type: "media", audio: audio}, [audio.buffer]);
    } else if (message.event === "mark" && message.mark && typeof message.mark.name === "string") {
      current.node.port.postMessage({type: "mark", name: message.mark.name});
    } else if (message.event === "clear") {
      current.clears += 1;
      current.node.port.postMessage({type: "clear"});
    }
  }

  function fromLine(current, message) {
    if (message.type === "frame" && current.streaming) {
      var chunk = current.chunk++;
      current.sent += 1;
      send(current, {event: "media", media: {track: "inbound", chunk: String(chunk + 1),
                                              timestamp: String(chunk * 20), payload: toBase64(message.audio)}});
    } else if (message.type === "mark") {
      current.marksEchoed += 1;
      send(current, {event: "mark", mark: {name: message.name}});
    }
  }

  function showTurns(turns) {
    transcript.replaceChildren.apply(transcript, turns.filter(function (turn) { return turn.text; }).map(function (turn) {
      var item = document.createElement("li");
      item.className = "turn-" + turn.speaker;
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = labels[turn.speaker] || turn.speaker;
      var said = document.createElement("span");
      said.dir = "auto";
      said.textContent = turn.text;
      item.append(who, said);
      return item;
    }));
  }

  function followTranscript(url) {
    // The stored turns, as the call's journal writes them; a few more looks once the call is over.
    var looksAfterEnd = 3;
    function look() {
      fetch(url, {credentials: "same-origin"})
        .then(function (answer) { return answer.ok ? answer.json() : null; })
        .then(function (body) {
          if (body) { showTurns(body.turns); }
          if (!call || call.turnsUrl !== url) { looksAfterEnd -= 1; }
          if (looksAfterEnd > 0) { setTimeout(look, 1500); }
        })
        .catch(function () { setTimeout(look, 3000); });
    }
    look();
  }

  function finish(current, state, message) {
    if (current.finished) { return; }
    current.finished = true;
    current.streaming = false;
    clearInterval(current.meterTimer);
    measure(current);
    micMeter.value = agentMeter.value = 0;
    current.microphone.getTracks().forEach(function (track) { track.stop(); });
    // The agent's last words were heard (the server waits for their mark): nothing left to play.
    current.context.close();
    if (call === current) { call = null; }
    show(state, message);
  }

  function askForCall() {
    var body = new FormData();
    body.append("csrf_token", document.getElementById("talk-csrf").value);
    return fetch(root.dataset.startUrl, {method: "POST", body: body, credentials: "same-origin"})
      .then(function (answer) {
        return answer.json().catch(function () { return {}; }).then(function (json) {
          if (!answer.ok) { throw new Error(json.error || labels.talk_refused); }
          return json;
        });
      });
  }

  function openLine(context, microphone) {
    return context.audioWorklet.addModule(root.dataset.workletUrl).then(function () {
      var node = new AudioWorkletNode(context, "talk-line", {numberOfInputs: 1, numberOfOutputs: 1,
                                                             outputChannelCount: [1]});
      var source = context.createMediaStreamSource(microphone);
      var micAnalyser = context.createAnalyser();
      var agentAnalyser = context.createAnalyser();
      micAnalyser.fftSize = agentAnalyser.fftSize = 2048;
      source.connect(micAnalyser);
      source.connect(node);
      node.connect(agentAnalyser);
      agentAnalyser.connect(context.destination);
      return {node: node, source: source, micAnalyser: micAnalyser, agentAnalyser: agentAnalyser};
    });
  }

  function start() {
    if (!window.AudioWorkletNode || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      show("failed", labels.talk_unsupported);
      return;
    }
    root.dataset.agentPeak = root.dataset.micPeak = "0";
    transcript.replaceChildren();
    callLink.hidden = true;
    show("asking");
    var context = new AudioContext();
    var microphone = null;
    // The microphone first: the call's token is short-lived, and the permission prompt may take a while.
    navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true,
                                                 autoGainControl: true, channelCount: 1}})
      .catch(function () { throw new Error(labels.talk_no_microphone); })
      .then(function (stream) {
        microphone = stream;
        show("connecting");
        return Promise.all([openLine(context, stream), askForCall(), context.resume()]);
      })
      .then(function (results) { connect(context, microphone, results[0], results[1]); })
      .catch(function (error) {
        if (microphone) { microphone.getTracks().forEach(function (track) { track.stop(); }); }
        context.close();
        show("failed", error.message);
      });
  }

  function connect(context, microphone, line, answer) {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var current = {
      context: context, microphone: microphone, node: line.node, micAnalyser: line.micAnalyser,
      agentAnalyser: line.agentAnalyser, buffer: new Float32Array(line.agentAnalyser.fftSize),
      socket: new WebSocket(scheme + "//" + location.host + answer.media_path),
      callSid: answer.call_sid, streamSid: answer.stream_sid, turnsUrl: answer.turns_url,
      sequence: 0, chunk: 0, sent: 0, received: 0, marksEchoed: 0, clears: 0,
      streaming: false, finished: false, hungUp: false,
    };
    call = current;
    root.dataset.callSid = answer.call_sid;
    callLink.href = answer.call_url;
    current.node.port.onmessage = function (event) { fromLine(current, event.data); };
    current.meterTimer = setInterval(function () { measure(current); }, 100);
    current.socket.onopen = function () {
      current.socket.send(JSON.stringify({event: "connected", protocol: "Call", version: "1.0.0"}));
      send(current, {event: "start", start: {
        streamSid: current.streamSid, accountSid: "", callSid: current.callSid, tracks: ["inbound"],
        customParameters: answer.parameters,
        mediaFormat: {encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1}}});
      current.streaming = true;
      show("live");
      followTranscript(current.turnsUrl);
    };
    current.socket.onmessage = function (event) { fromServer(current, event.data); };
    current.socket.onclose = function (event) {
      callLink.hidden = false;
      if (current.hungUp || event.code === 1000) {
        finish(current, "ended");
      } else {
        finish(current, "failed", event.code === 1008 ? labels.talk_refused : labels.talk_state_failed);
      }
    };
  }

  function hangUp() {
    var current = call;
    if (!current) { return; }
    current.hungUp = true;
    current.streaming = false;
    show("ending");
    send(current, {event: "stop", stop: {accountSid: "", callSid: current.callSid}});
    current.socket.close(1000);
  }

  startButton.addEventListener("click", start);
  hangUpButton.addEventListener("click", hangUp);
  window.addEventListener("pagehide", hangUp);
});
