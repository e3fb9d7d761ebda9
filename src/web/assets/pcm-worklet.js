// The live mode's AudioWorklet: the microphone's Float32 samples, at the
// AudioContext's rate, become 16-bit little-endian mono PCM at 24 kHz (the
// realtime API's `audio/pcm` rate), posted to the page in ~100 ms chunks
// (an ArrayBuffer, transferred) with the chunk's peak level.
//
// Resampling: a windowed-sinc low-pass below the new Nyquist frequency
// (when the rate goes down), then linear interpolation at the output times.

const OUT_RATE = 24000;
const CHUNK_MS = 100;
const TAPS = 31; // odd: symmetric around the centre tap

/** A Blackman-windowed sinc low-pass with cutoff `fc` (fraction of the input rate). */
function lowPass(fc) {
  const h = new Float32Array(TAPS);
  const mid = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const n = i - mid;
    const sinc = n === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * n) / (Math.PI * n);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (TAPS - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < TAPS; i++) h[i] /= sum;
  return h;
}

class PcmProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the AudioWorkletGlobalScope's: the context's rate.
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.filter = this.step > 1 ? lowPass(0.45 / this.step) : null;
    this.history = new Float32Array(TAPS); // the last TAPS inputs, a ring
    this.historyAt = 0;
    this.prev = 0; // the filtered input before `cur`
    this.cur = 0;
    this.pos = 0; // the next output's time, in input samples after `prev`
    this.chunk = new Int16Array(Math.round((OUT_RATE * CHUNK_MS) / 1000));
    this.filled = 0;
    this.peak = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === 'flush') this.flush();
      if (event.data === 'stop') {
        this.flush();
        this.running = false;
      }
    };
  }

  filtered(x) {
    if (!this.filter) return x;
    this.history[this.historyAt] = x;
    this.historyAt = (this.historyAt + 1) % TAPS;
    let y = 0;
    for (let i = 0, j = this.historyAt; i < TAPS; i++, j = (j + 1) % TAPS) y += this.filter[i] * this.history[j];
    return y;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    const a = Math.abs(v);
    if (a > this.peak) this.peak = a;
    if (this.filled === this.chunk.length) this.flush();
  }

  flush() {
    if (!this.filled) return;
    // Int16Array is in the platform's byte order: little-endian everywhere
    // browsers run, but write the bytes explicitly to be sure.
    const bytes = new ArrayBuffer(this.filled * 2);
    const view = new DataView(bytes);
    for (let i = 0; i < this.filled; i++) view.setInt16(i * 2, this.chunk[i], true);
    this.port.postMessage({ pcm: bytes, peak: this.peak }, [bytes]);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || !input.length) return true; // no source connected (yet)
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      x = this.filtered(x / channels);
      this.prev = this.cur;
      this.cur = x;
      // Outputs between prev (time 0) and cur (time 1).
      while (this.pos <= 1) {
        this.emit(this.prev + (this.cur - this.prev) * this.pos);
        this.pos += this.step;
      }
      this.pos -= 1;
    }
    return true;
  }
}

registerProcessor('pcm-24k', PcmProcessor);
