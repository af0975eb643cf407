// Talk to your agent, in the audio thread: the phone line's two directions.
// Up: the microphone, low-passed and resampled to 8 kHz, G.711 μ-law, posted as 20 ms frames of
// 160 bytes (Twilio's). Down: the agent's μ-law, decoded and resampled up to the context's rate;
// each mark is posted back once the audio queued before it has been played, and `clear` drops
// what is queued at once (its marks posted back then, as Twilio echoes them).
"use strict";

var LINE_RATE = 8000;
var FRAME_BYTES = 160; // 20 ms at 8 kHz
var CUTOFF_HZ = 3400; // the telephone band's top: nothing above 4 kHz may fold into it

// --- G.711 μ-law ----------------------------------------------------------------------

function mulawByte(sample) {
  // A float in -1..1 as a μ-law byte: sign, a 3-bit exponent (the top bit), 4 bits of mantissa.
  var value = Math.round(Math.max(-1, Math.min(1, sample)) * 32767);
  var sign = 0;
  if (value < 0) { sign = 0x80; value = -value; }
  if (value > 32635) { value = 32635; }
  value += 0x84;
  var exponent = 7;
  for (var bit = 0x4000; (value & bit) === 0 && exponent > 0; bit >>= 1) { exponent--; }
  var mantissa = (value >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

var MULAW_TO_FLOAT = (function () {
  var table = new Float32Array(256);
  for (var byte = 0; byte < 256; byte++) {
    var u = ~byte & 0xff;
    var magnitude = ((((u & 0x0f) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84;
    table[byte] = ((u & 0x80) ? -magnitude : magnitude) / 32768;
  }
  return table;
})();

// --- resampling -----------------------------------------------------------------------

function LowPass(rate, cutoff) {
  // A biquad (RBJ's cookbook, Butterworth Q), transposed direct form II.
  var w = 2 * Math.PI * Math.min(cutoff, rate * 0.45) / rate;
  var alpha = Math.sin(w) / Math.SQRT2;
  var cos = Math.cos(w);
  var a0 = 1 + alpha;
  this.b0 = (1 - cos) / 2 / a0;
  this.b1 = (1 - cos) / a0;
  this.b2 = this.b0;
  this.a1 = -2 * cos / a0;
  this.a2 = (1 - alpha) / a0;
  this.z1 = 0;
  this.z2 = 0;
}
LowPass.prototype.step = function (x) {
  var y = this.b0 * x + this.z1;
  this.z1 = this.b1 * x - this.a1 * y + this.z2;
  this.z2 = this.b2 * x - this.a2 * y;
  return y;
};

function Downsampler(inRate, onSample) {
  // Two biquads (4th order) below 4 kHz, then linear interpolation at 8 kHz points.
  this.filters = [new LowPass(inRate, CUTOFF_HZ), new LowPass(inRate, CUTOFF_HZ)];
  this.step = inRate / LINE_RATE; // input samples per output sample
  this.phase = 0; // input samples since the last output point
  this.previous = 0;
  this.onSample = onSample;
}
Downsampler.prototype.push = function (samples) {
  var first = this.filters[0], second = this.filters[1];
  for (var i = 0; i < samples.length; i++) {
    var x = second.step(first.step(samples[i]));
    this.phase += 1;
    while (this.phase >= this.step) {
      this.phase -= this.step; // the output point lies `phase` samples before x
      this.onSample(x + (this.previous - x) * this.phase);
    }
    this.previous = x;
  }
};

// --- the line -------------------------------------------------------------------------

class TalkLine extends AudioWorkletProcessor {
  constructor() {
    super();
    var line = this;
    this.frame = new Uint8Array(FRAME_BYTES);
    this.filled = 0;
    this.down = new Downsampler(sampleRate, function (value) {
      line.frame[line.filled++] = mulawByte(value);
      if (line.filled === FRAME_BYTES) {
        var full = line.frame;
        line.port.postMessage({type: "frame", audio: full}, [full.buffer]);
        line.frame = new Uint8Array(FRAME_BYTES);
        line.filled = 0;
      }
    });
    // The agent's audio and marks, in order: {audio: Float32Array at 8 kHz, at} or {mark}.
    this.queue = [];
    this.upStep = LINE_RATE / sampleRate; // line samples per output sample
    this.upPhase = 0;
    this.last = 0; // the line samples the output is between
    this.next = 0;
    this.port.onmessage = function (event) { line.command(event.data); };
  }

  command(message) {
    if (message.type === "media") {
      var bytes = message.audio;
      var audio = new Float32Array(bytes.length);
      for (var i = 0; i < bytes.length; i++) { audio[i] = MULAW_TO_FLOAT[bytes[i]]; }
      this.queue.push({audio: audio, at: 0});
    } else if (message.type === "mark") {
      this.queue.push({mark: message.name});
    } else if (message.type === "clear") {
      var dropped = this.queue;
      this.queue = [];
      this.last = this.next = 0;
      for (var j = 0; j < dropped.length; j++) {
        if (dropped[j].mark !== undefined) { this.port.postMessage({type: "mark", name: dropped[j].mark}); }
      }
    }
  }

  nextLineSample() {
    // The next queued sample; the marks before it are reached (all audio ahead of them played).
    while (this.queue.length) {
      var head = this.queue[0];
      if (head.mark !== undefined) {
        this.queue.shift();
        this.port.postMessage({type: "mark", name: head.mark});
      } else if (head.at < head.audio.length) {
        return head.audio[head.at++];
      } else {
        this.queue.shift();
      }
    }
    return 0; // nothing queued: silence
  }

  process(inputs, outputs) {
    var input = inputs[0];
    if (input && input.length) { this.down.push(input[0]); }
    var output = outputs[0];
    if (output && output.length) {
      var channel = output[0];
      for (var i = 0; i < channel.length; i++) {
        this.upPhase += this.upStep;
        while (this.upPhase >= 1) {
          this.upPhase -= 1;
          this.last = this.next;
          this.next = this.nextLineSample();
        }
        channel[i] = this.last + (this.next - this.last) * this.upPhase;
      }
      for (var c = 1; c < output.length; c++) { output[c].set(channel); }
    }
    return true;
  }
}

registerProcessor("talk-line", TalkLine);
