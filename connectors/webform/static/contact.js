// The contact form's proof of work, done in the background while the person types.
// The server sends a challenge (the form's token) and a difficulty (data-bits); we look for
// a nonce such that SHA-256(token + ":" + nonce) starts with that many zero bits, and send
// it in the hidden "work" field. Without this script the form still works (see the docs).
(function () {
  "use strict";
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  var W = new Int32Array(64);

  function bytesOf(text) { return new TextEncoder().encode(text); }

  // SHA-256 of a byte array; returns the eight 32-bit words of the digest.
  function sha256(bytes) {
    var n = bytes.length, blocks = ((n + 9 + 63) >> 6) << 6;
    var m = new Uint8Array(blocks);
    m.set(bytes);
    m[n] = 0x80;
    var bits = n * 8;
    m[blocks - 4] = (bits >>> 24) & 255; m[blocks - 3] = (bits >>> 16) & 255;
    m[blocks - 2] = (bits >>> 8) & 255; m[blocks - 1] = bits & 255;
    var h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a;
    var h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (var off = 0; off < blocks; off += 64) {
      for (var i = 0; i < 16; i++) {
        var j = off + i * 4;
        W[i] = (m[j] << 24) | (m[j + 1] << 16) | (m[j + 2] << 8) | m[j + 3];
      }
      for (i = 16; i < 64; i++) {
        var x = W[i - 15], y = W[i - 2];
        var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
      }
      var a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (i = 0; i < 64; i++) {
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var ch = (e & f) ^ (~e & g);
        var t1 = (h + S1 + ch + K[i] + W[i]) | 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var maj = (a & b) ^ (a & c) ^ (b & c);
        var t2 = (S0 + maj) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    return [h0, h1, h2, h3, h4, h5, h6, h7];
  }

  function zeroBits(words, bits) {
    for (var i = 0; i < 8 && bits > 0; i++, bits -= 32) {
      var need = bits >= 32 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      if (bits >= 32 ? words[i] !== 0 : ((words[i] >>> 0) & need) !== 0) { return false; }
    }
    return true;
  }

  var form = document.getElementById("contact");
  // Without what the work needs, leave the form as it is without script (the no-script
  // path: no work, stricter limits) rather than hold it back.
  if (!form || typeof TextEncoder === "undefined" || typeof Int32Array === "undefined") { return; }
  var bits = parseInt(form.getAttribute("data-bits") || "0", 10);
  var token = document.getElementById("form_token").value;
  var work = document.getElementById("work");
  var progress = document.getElementById("progress");
  var button = document.getElementById("send");
  var expected = Math.pow(2, bits);
  var nonce = 0, done = false, waiting = false;
  var label = progress.getAttribute("data-working") || "Preparing your message… {percent}%";

  function giveUp() {
    // Something went wrong in the work: send the form the no-script way.
    work.value = "";
    done = true;
    if (waiting) { button.disabled = false; form.submit(); }
  }

  function step() {
    try { search(); } catch (e) { giveUp(); }
  }

  function search() {
    var until = nonce + 4000;
    for (; nonce < until; nonce++) {
      var candidate = nonce.toString(16);
      if (zeroBits(sha256(bytesOf(token + ":" + candidate)), bits)) {
        work.value = candidate;
        done = true;
        progress.textContent = progress.getAttribute("data-ready") || "Ready to send.";
        if (waiting) { button.disabled = false; form.submit(); }
        return;
      }
    }
    if (waiting) {
      var percent = Math.min(99, Math.floor(nonce / expected * 100));
      progress.textContent = label.replace("{percent}", String(percent));
    }
    setTimeout(step, 0);
  }

  form.addEventListener("submit", function (event) {
    if (done) { return; }
    event.preventDefault();
    waiting = true;
    button.disabled = true;
    progress.textContent = label.replace("{percent}", "0");
  });
  setTimeout(step, 0);
}());
