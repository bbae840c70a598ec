// Packed alpha → a transparent canvas, in WebGL. Shared by the OBS page (/obs) and the viewer page (?alpha=1).
//
// Packed layout (drivers/output/webrtc/packed_alpha.py): colour on top, 16 guard rows, alpha as grey below;
// the colour half has Hc = (height - 16) / 2 rows. The colour is premultiplied (rendered over black), which is
// what a WebGL canvas with premultipliedAlpha composites: it is drawn as decoded, in the video's own sRGB
// values, with no conversion either way. Alpha is linear coverage; codec noise near 0 and 255 is clipped.
"use strict";

window.PackedAlpha = (() => {
  const GUARD_ROWS = 16;
  const VERTEX = `
attribute vec2 corner;
varying vec2 uv;
void main() {
  uv = vec2(corner.x * 0.5 + 0.5, 0.5 - corner.y * 0.5);  // top left of the canvas = first row of the video
  gl_Position = vec4(corner, 0.0, 1.0);
}`;
  const FRAGMENT = `
#ifdef GL_FRAGMENT_PRECISION_HIGH
precision highp float;
#else
precision mediump float;
#endif
uniform sampler2D frame;
uniform float colourRows;  // Hc / height
uniform float alphaStart;  // (Hc + 16) / height
varying vec2 uv;
void main() {
  vec3 colour = texture2D(frame, vec2(uv.x, uv.y * colourRows)).rgb;
  float a = texture2D(frame, vec2(uv.x, alphaStart + uv.y * colourRows)).g;
  a = clamp((a - 4.0 / 255.0) / (247.0 / 255.0), 0.0, 1.0);
  gl_FragColor = vec4(min(colour, vec3(a)), a);  // premultiplied: colour never exceeds coverage
}`;

  function compile(gl, type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    return shader;
  }

  // Draws each new decoded picture of `video` onto `canvas` (sized to the colour half); `onFrame(size)` after
  // each. Throws when the browser has no WebGL.
  function attach(video, canvas, onFrame) {
    const gl = canvas.getContext("webgl", { alpha: true, premultipliedAlpha: true, antialias: false, depth: false });
    if (!gl) throw new Error("this browser has no WebGL; enable hardware acceleration");
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    gl.useProgram(program);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const corner = gl.getAttribLocation(program, "corner");
    gl.enableVertexAttribArray(corner);
    gl.vertexAttribPointer(corner, 2, gl.FLOAT, false, 0, 0);
    gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
    // Canvas pixels map onto texel centres one to one: NEAREST never blends a row of the other half in.
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
    gl.clearColor(0, 0, 0, 0);
    const colourRows = gl.getUniformLocation(program, "colourRows");
    const alphaStart = gl.getUniformLocation(program, "alphaStart");
    let size = null;

    function draw() {
      const w = video.videoWidth;
      const h = video.videoHeight;
      if (!w || h <= GUARD_ROWS) return;
      const rows = (h - GUARD_ROWS) / 2;
      if (!size || size[0] !== w || size[1] !== h) {
        size = [w, h];
        canvas.width = w;
        canvas.height = rows;
        gl.viewport(0, 0, w, rows);
        gl.uniform1f(colourRows, rows / h);
        gl.uniform1f(alphaStart, (rows + GUARD_ROWS) / h);
      }
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, video);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
      onFrame(size);
    }

    // Draw each new decoded picture once (requestVideoFrameCallback), or poll the clock where it is missing.
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      const next = () => { draw(); video.requestVideoFrameCallback(next); };
      video.requestVideoFrameCallback(next);
    } else {
      let last = -1;
      const poll = () => {
        if (video.currentTime !== last) { last = video.currentTime; draw(); }
        requestAnimationFrame(poll);
      };
      requestAnimationFrame(poll);
    }
    return { clear: () => gl.clear(gl.COLOR_BUFFER_BIT) };
  }

  return { attach, GUARD_ROWS };
})();
