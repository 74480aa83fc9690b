// `gt viz --format html`: one self-contained page that draws the timeline on a
// canvas, with zoom, pan and tooltips (Note [viz html data]).

#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "tools/viz.h"

namespace gt::tools {
namespace {

// Note [viz html data]
// The page embeds the timeline as one JSON document in a <script
// type="application/json"> that the viewer reads with JSON.parse: column
// arrays rather than an object per event (a 200k-event log stays a few MB),
// items grouped by lane (`lo` gives each lane's first item), times in
// microseconds from the start, and the event names and details as string
// tables indexed per item. Every string from a log goes through
// append_json_string, which also escapes '<', '>' and '&', so nothing in a
// log can close the script element; the page puts text on screen with
// textContent only. The drawing code mirrors viz_cairo.cpp (Note [viz
// drawing]): same lane rows, colours and thin-box merging.

void append_number(std::string& out, double v) {
  char buf[40];
  const double r = std::round(v * 10) / 10;  // 0.1 us
  if (r == std::floor(r) && std::fabs(r) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", r);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f", r);
  }
  out += buf;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string hex_color(uint32_t rgb) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%06x", rgb & 0xffffff);
  return buf;
}

// String table: index of `s`, added on first use.
class Strings {
 public:
  uint32_t index(const std::string& s) {
    const auto [it, added] = map_.try_emplace(s, static_cast<uint32_t>(list_.size()));
    if (added) list_.push_back(s);
    return it->second;
  }
  void append_json(std::string& out) const {
    out += '[';
    for (size_t i = 0; i < list_.size(); ++i) {
      if (i > 0) out += ',';
      append_json_string(out, list_[i]);
    }
    out += ']';
  }

 private:
  std::unordered_map<std::string, uint32_t> map_;
  std::vector<std::string> list_;
};

const char* const kHead = R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>)HTML";

const char* const kStyleAndBody = R"HTML(</title>
<style>
body{margin:0;font:12px "DejaVu Sans",Verdana,sans-serif;color:#1a1a1a;background:#fff}
#bar{padding:10px 14px 4px 14px}
#title{font-size:17px;font-weight:bold;margin:0}
#sub{color:#666;font-size:11px;margin:3px 0 6px 0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#controls{display:flex;gap:12px;align-items:center;color:#555;font-size:11px}
button{font:inherit;padding:2px 10px;border:1px solid #aab;border-radius:3px;background:#f4f5f8;cursor:pointer}
button:hover{background:#e4e7ee}
#wrap{position:relative}
canvas{display:block;cursor:grab}
canvas.drag{cursor:grabbing}
#tip{position:absolute;display:none;pointer-events:none;background:rgba(255,255,255,.97);
border:1px solid #99a;border-radius:3px;padding:6px 8px;font-size:11px;line-height:1.45;
box-shadow:0 2px 8px rgba(0,0,0,.18);max-width:560px;white-space:pre-wrap;word-break:break-all;z-index:2}
</style></head><body>
<div id="bar"><div id="title"></div><div id="sub"></div>
<div id="controls"><button id="reset" type="button">Reset zoom</button>
<span>mouse wheel: zoom at the cursor &middot; drag: pan &middot; hover: details &middot; double-click: reset</span>
<span id="range"></span></div></div>
<div id="wrap"><canvas id="c"></canvas><div id="tip"></div></div>
<script type="application/json" id="gt-data">)HTML";

// The viewer. Plain ES2017, no dependencies.
const char* const kScript = R"JS(</script>
<script>
(function () {
  'use strict';
  // JSON.parse reads a large literal several times faster than the JS parser.
  const GT = JSON.parse(document.getElementById('gt-data').textContent);
  const LANE_H = 42, MARK_H = 13, BOX_H = 21, TICK_H = 8, AXIS_H = 36, LEG_H = 19, MARGIN = 14;
  const canvas = document.getElementById('c');
  const ctx = canvas.getContext('2d');
  const tip = document.getElementById('tip');
  document.getElementById('title').textContent = GT.title;
  document.getElementById('sub').textContent = GT.subtitle;
  document.title = GT.title;
  const n = GT.s.length;
  const T0 = new Float64Array(n), T1 = new Float64Array(n);
  for (let i = 0; i < n; i++) { T0[i] = GT.t[i] * 1e-6; T1[i] = (GT.t[i] + GT.d[i]) * 1e-6; }
  const S = Int32Array.from(GT.s);
  const styles = GT.styles;  // [label, colour, shape, kind] kind: 0 box, 1 marker, 2 tick
  const lanes = GT.lanes, lo = GT.lo;
  const full = GT.duration > 0 ? GT.duration : 1e-3;
  const maxDur = lanes.map(function (_, l) {
    let m = 0;
    for (let i = lo[l]; i < lo[l + 1]; i++) m = Math.max(m, T1[i] - T0[i]);
    return m;
  });
  const present = new Array(styles.length).fill(false);
  for (let i = 0; i < n; i++) present[S[i]] = true;
  const legend = [];
  styles.forEach(function (s, i) { if (present[i]) legend.push([s[0], i]); });
  legend.push(['idle', -1]);

  let W = 800, H = 300, px0 = 100, px1 = 700, v0 = 0, v1 = full;
  const lanesY0 = 4;
  const lanesY1 = lanesY0 + LANE_H * lanes.length;
  let legendRows = 1;

  function font(size, bold) { ctx.font = (bold ? 'bold ' : '') + size + 'px "DejaVu Sans",Verdana,sans-serif'; }
  function legendWidth(e) { return 26 + ctx.measureText(e[0]).width + 16; }

  function layout() {
    W = Math.max(480, document.documentElement.clientWidth || window.innerWidth);
    font(12, true);
    let lw = 70;
    lanes.forEach(function (l) { lw = Math.max(lw, ctx.measureText(l).width); });
    lw = Math.min(lw, W * 0.3);
    px0 = MARGIN + lw + 14;
    px1 = W - MARGIN - 6;
    font(11, false);
    legendRows = 1;
    let x = px0;
    legend.forEach(function (e) {
      const w = legendWidth(e);
      if (x + w > px1 && x > px0) { legendRows++; x = px0; }
      x += w;
    });
    H = Math.ceil(lanesY1 + AXIS_H + LEG_H * legendRows + MARGIN);
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.width = W + 'px';
    canvas.style.height = H + 'px';
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function xOf(t) { return px0 + (t - v0) / (v1 - v0) * (px1 - px0); }
  function tOf(x) { return v0 + (x - px0) / (px1 - px0) * (v1 - v0); }
  function laneY(l) { return lanesY0 + LANE_H * l; }
  function isWorker(l) { return lanes[l].indexOf('WORKER') === 0; }
  function lum(hex) {
    const v = parseInt(hex.slice(1), 16);
    return (0.299 * (v >> 16) + 0.587 * ((v >> 8) & 255) + 0.114 * (v & 255)) / 255;
  }
  function rgba(hex, a) {
    const v = parseInt(hex.slice(1), 16);
    return 'rgba(' + (v >> 16) + ',' + ((v >> 8) & 255) + ',' + (v & 255) + ',' + a + ')';
  }
  // First item of lane l whose start is >= t.
  function lowerBound(l, t) {
    let a = lo[l], b = lo[l + 1];
    while (a < b) { const m = (a + b) >> 1; if (T0[m] < t) a = m + 1; else b = m; }
    return a;
  }

  function niceTicks(span, pixels) {
    const target = Math.max(2, pixels / 110);
    const raw = span / target;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = mag;
    for (const m of [1, 2, 5, 10]) { step = m * mag; if (step >= raw) break; }
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return [step, decimals];
  }

  function symbol(style, x, y, r) {
    const s = styles[style], shape = s[2];
    ctx.fillStyle = s[1]; ctx.strokeStyle = s[1]; ctx.lineWidth = 1.4;
    ctx.beginPath();
    if (shape === 'triangle-open' || shape === 'triangle') {
      ctx.moveTo(x - r, y - r * 0.8); ctx.lineTo(x + r, y - r * 0.8); ctx.lineTo(x, y + r); ctx.closePath();
      if (shape === 'triangle') ctx.fill(); else ctx.stroke();
    } else if (shape === 'cross') {
      ctx.lineWidth = 2;
      ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r); ctx.moveTo(x + r, y - r); ctx.lineTo(x - r, y + r);
      ctx.stroke();
    } else if (shape === 'circle' || shape === 'circle-open') {
      ctx.arc(x, y, r * 0.85, 0, 2 * Math.PI);
      if (shape === 'circle') ctx.fill(); else ctx.stroke();
    } else if (shape === 'square') {
      ctx.strokeRect(x - r * 0.75, y - r * 0.75, r * 1.5, r * 1.5);
    } else if (shape === 'diamond') {
      ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y); ctx.closePath();
      ctx.fill(); ctx.strokeStyle = '#fff'; ctx.lineWidth = 0.8; ctx.stroke();
    } else {
      ctx.lineWidth = 1.5; ctx.moveTo(x, y - r); ctx.lineTo(x, y + r); ctx.stroke();
    }
  }

  function hatch(x, y, w, h) {
    ctx.save();
    ctx.beginPath(); ctx.rect(x, y, w, h); ctx.clip();
    ctx.strokeStyle = '#8fa3d9'; ctx.lineWidth = 1.2;
    ctx.beginPath();
    for (let hx = x - h; hx < x + w; hx += 6) { ctx.moveTo(hx, y + h); ctx.lineTo(hx + h, y); }
    ctx.stroke();
    ctx.restore();
  }

  function drawBox(i, x0, x1, y) {
    const st = S[i], s = styles[st];
    x0 = Math.max(x0, px0 - 2); x1 = Math.min(x1, px1 + 2);
    const w = x1 - x0, gap = w >= 4 ? 1 : 0;
    ctx.fillStyle = s[1];
    ctx.fillRect(x0, y, w - gap, BOX_H);
    let label = '';
    if (st === GT.compiled) {
      if (w >= 4) {
        hatch(x0, y, w - gap, BOX_H);
        ctx.strokeStyle = '#0b1330'; ctx.lineWidth = 1.5;
        ctx.strokeRect(x0 + 0.75, y + 0.75, w - gap - 1.5, BOX_H - 1.5);
      }
      label = GT.o[i] + ' ops';
    } else if (st <= GT.unknownOp) {
      label = GT.ops[GT.n[i]];
    }
    if (!label || w < 24) return;
    font(10, st === GT.compiled);
    const tw = ctx.measureText(label).width;
    if (tw + 6 > w - gap) return;
    const tx = x0 + (w - gap - tw) / 2;
    if (st === GT.compiled) { ctx.fillStyle = s[1]; ctx.fillRect(tx - 2, y + 4, tw + 4, BOX_H - 8); }
    ctx.fillStyle = lum(s[1]) < 0.55 ? '#fff' : '#1a1a1a';
    ctx.fillText(label, tx, y + BOX_H / 2 + 3.5);
  }

  function drawLane(l) {
    const y = laneY(l), by = y + MARK_H;
    const first = lowerBound(l, v0 - maxDur[l]), end = lo[l + 1];
    const scale = (px1 - px0) / (v1 - v0);
    // Thin boxes merge into runs (Note [viz drawing] in viz_cairo.cpp).
    let runOn = false, rx0 = 0, rx1 = 0;
    let cover = new Float64Array(styles.length);
    function flush() {
      if (!runOn) return;
      runOn = false;
      let best = 0, total = 0;
      for (let s = 0; s < cover.length; s++) { total += cover[s]; if (cover[s] > cover[best]) best = s; }
      const w = Math.max(rx1 - rx0, 1);
      ctx.fillStyle = rgba(styles[best][1], Math.min(1, Math.max(0.45, total / w)));
      ctx.fillRect(rx0, by, w, BOX_H);
    }
    let last = first;
    for (let i = first; i < end; i++) {
      if (T0[i] > v1) break;
      last = i + 1;
      if (styles[S[i]][3] !== 0) continue;
      const x0 = px0 + (T0[i] - v0) * scale, x1 = px0 + (T1[i] - v0) * scale;
      if (x1 < px0 - 2) continue;
      if (x1 - x0 >= 0.5) { flush(); drawBox(i, x0, x1, by); continue; }
      if (runOn && x0 > rx1 + 0.5) flush();
      if (!runOn) { runOn = true; rx0 = x0; rx1 = x1; cover.fill(0); }
      rx1 = Math.max(rx1, x1);
      cover[S[i]] += Math.max(x1 - x0, 1e-3);
    }
    flush();
    const lastCol = new Array(styles.length).fill(-1e9);
    const ty1 = y + LANE_H - 1, ty0 = isWorker(l) ? ty1 - TICK_H + 1 : by, mid = (ty0 + ty1) / 2;
    ctx.lineWidth = 1;
    let markerX = -1e9, clusterX = -1e9;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = lowerBound(l, v0 - 4 / scale); i < last; i++) {
        const kind = styles[S[i]][3];
        if (kind === 0 || (kind === 2) !== (pass === 0)) continue;
        const x = px0 + (T0[i] - v0) * scale, col = Math.round(x);
        if (col === lastCol[S[i]]) continue;
        lastCol[S[i]] = col;
        if (pass === 0) {
          let a = ty0, b = ty1;
          if (S[i] === GT.send) b = mid;
          if (S[i] === GT.recv) a = mid;
          ctx.strokeStyle = rgba(styles[S[i]][1], 0.85);
          ctx.beginPath(); ctx.moveTo(col + 0.5, a); ctx.lineTo(col + 0.5, b); ctx.stroke();
        } else {
          let mx = x;  // nudged apart like viz_cairo.cpp does
          if (x < markerX + 8 && x - clusterX < 24) mx = markerX + 8; else clusterX = x;
          markerX = mx;
          symbol(S[i], mx, y + MARK_H / 2 + 0.5, 4.5);
        }
      }
    }
  }

  function draw() {
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, W, H);
    const [step, decimals] = niceTicks(v1 - v0, px1 - px0);
    for (let l = 0; l < lanes.length; l++) {
      ctx.fillStyle = l % 2 === 0 ? GT.laneColor : GT.laneAltColor;
      ctx.fillRect(px0, laneY(l), px1 - px0, LANE_H);
      ctx.fillStyle = '#1a1a1a';
      font(12, true);
      const busy = GT.busy[l];
      ctx.fillText(lanes[l], MARGIN, laneY(l) + (busy >= 0 ? 20 : 26), px0 - MARGIN - 14);
      if (busy >= 0) {
        ctx.fillStyle = '#666';
        font(10, false);
        const pct = busy > 0 && busy < 0.01 ? '<1' : (busy * 100).toFixed(0);
        ctx.fillText('busy ' + pct + '%', MARGIN, laneY(l) + 33);
      }
    }
    ctx.strokeStyle = '#c8ccd4'; ctx.lineWidth = 1;
    ctx.beginPath();
    for (let l = 0; l <= lanes.length; l++) {
      const y = Math.round(laneY(l)) + 0.5;
      ctx.moveTo(MARGIN, y); ctx.lineTo(px1, y);
    }
    ctx.stroke();
    const firstTick = Math.ceil(v0 / step) * step;
    ctx.strokeStyle = '#fff';
    ctx.beginPath();
    for (let v = firstTick; v <= v1 + step * 1e-6; v += step) {
      const x = Math.round(xOf(v)) + 0.5;
      ctx.moveTo(x, lanesY0); ctx.lineTo(x, lanesY1);
    }
    ctx.stroke();
    ctx.save();
    ctx.beginPath(); ctx.rect(px0, 0, px1 - px0, lanesY1); ctx.clip();
    for (let l = 0; l < lanes.length; l++) drawLane(l);
    ctx.restore();
    // Axis.
    const ay = Math.round(lanesY1) + 0.5;
    ctx.strokeStyle = '#444'; ctx.fillStyle = '#1a1a1a';
    ctx.beginPath(); ctx.moveTo(px0, ay); ctx.lineTo(px1, ay);
    font(11, false);
    let lastRight = -1e9;
    for (let v = firstTick; v <= v1 + step * 1e-6; v += step) {
      const x = Math.round(xOf(v)) + 0.5;
      ctx.moveTo(x, ay); ctx.lineTo(x, ay + 5);
      const label = (Math.abs(v) < step * 1e-6 ? 0 : v).toFixed(decimals);
      const w = ctx.measureText(label).width;
      const left = Math.min(x - w / 2, px1 - w);
      if (left > lastRight + 6) { ctx.fillText(label, left, ay + 17); lastRight = left + w; }
    }
    ctx.stroke();
    ctx.fillStyle = '#666';
    ctx.fillText('seconds', MARGIN, ay + 17);
    // Legend.
    let lx = px0, ly = lanesY1 + AXIS_H + 4;
    legend.forEach(function (e) {
      const w = legendWidth(e);
      if (lx + w > px1 && lx > px0) { ly += LEG_H; lx = px0; }
      if (e[1] < 0) {
        ctx.fillStyle = GT.laneColor; ctx.fillRect(lx, ly - 5, 20, 11);
        ctx.strokeStyle = '#b0b4bc'; ctx.lineWidth = 1; ctx.strokeRect(lx + 0.5, ly - 4.5, 19, 10);
      } else if (styles[e[1]][3] === 0) {
        ctx.fillStyle = styles[e[1]][1]; ctx.fillRect(lx, ly - 5, 20, 11);
        if (e[1] === GT.compiled) hatch(lx, ly - 5, 20, 11);
      } else {
        symbol(e[1], lx + 10, ly, 5);
      }
      ctx.fillStyle = '#333';
      font(11, false);
      ctx.fillText(e[0], lx + 26, ly + 4);
      lx += w;
    });
    document.getElementById('range').textContent =
      'showing ' + v0.toFixed(decimals + 1) + ' to ' + v1.toFixed(decimals + 1) + ' s';
  }

  let pending = false;
  function redraw() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; draw(); });
  }

  function clampView() {
    const span = Math.min(Math.max(v1 - v0, 1e-7), full * 1.2);
    if (v0 < -full * 0.1) v0 = -full * 0.1;
    if (v0 + span > full * 1.1) v0 = full * 1.1 - span;
    v1 = v0 + span;
  }

  function fmtTime(s) { return s.toFixed(6) + ' s'; }
  function fmtDur(us) {
    if (us >= 1e6) return (us / 1e6).toFixed(3) + ' s';
    if (us >= 1e3) return (us / 1e3).toFixed(3) + ' ms';
    return us.toFixed(1) + ' \u00b5s';
  }

  // The item under (mx, my), or -1: markers in the top row, ticks in the
  // bottom row (and the box row of client/dispatcher lanes), else boxes.
  function hit(mx, my) {
    if (mx < px0 || mx > px1 || my < lanesY0 || my >= lanesY1) return -1;
    const l = Math.floor((my - lanesY0) / LANE_H);
    const ry = my - laneY(l);
    const row = ry < MARK_H ? 1 : (ry >= LANE_H - TICK_H ? 2 : 0);
    const scale = (px1 - px0) / (v1 - v0);
    const t = tOf(mx), tol = 5 / scale;
    let best = -1, bestDist = 1e9;
    for (let i = lowerBound(l, t - maxDur[l] - tol); i < lo[l + 1] && T0[i] <= t + tol; i++) {
      const kind = styles[S[i]][3];
      let d;
      if (kind === 0) {
        if (row !== 0) continue;
        d = t < T0[i] ? (T0[i] - t) * scale : (t > T1[i] ? (t - T1[i]) * scale : 0);
        if (d > 2) continue;
      } else {
        if (kind === 1 ? row !== 1 : !(row === 2 || (row === 0 && !isWorker(l)))) continue;
        d = Math.abs(T0[i] - t) * scale;
        if (d > 5) continue;
      }
      if (d < bestDist || (d === bestDist && kind !== 0)) { best = i; bestDist = d; }
    }
    return best;
  }

  function showTip(i, mx, my) {
    if (i < 0) { tip.style.display = 'none'; return; }
    const st = styles[S[i]];
    const lane = lanes.findIndex(function (_, l) { return i >= lo[l] && i < lo[l + 1]; });
    let text = lanes[lane] + '  \u00b7  ' + GT.names[GT.n[i]] + '  (' + st[0] + ')\n';
    if (st[3] === 0) {
      text += 'from ' + fmtTime(T0[i]) + ' to ' + fmtTime(T1[i]) + ', ' + fmtDur(GT.d[i]) + '\n';
    } else {
      text += 'at ' + fmtTime(T0[i]) + '\n';
    }
    text += 'seq #' + GT.q[i];
    const details = GT.details[GT.x[i]];
    if (details) text += '\n' + details;
    tip.textContent = text;
    tip.style.display = 'block';
    const wrap = canvas.getBoundingClientRect();
    let x = mx + 14, y = my + 16;
    if (x + tip.offsetWidth > wrap.width - 4) x = Math.max(4, mx - tip.offsetWidth - 10);
    if (y + tip.offsetHeight > wrap.height + 200) y = my - tip.offsetHeight - 10;
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  }

  let drag = null;
  canvas.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect();
    const mx = Math.min(Math.max(ev.clientX - r.left, px0), px1);
    const tc = tOf(mx);
    const dy = ev.deltaMode === 1 ? ev.deltaY * 16 : ev.deltaY;
    const f = Math.exp(Math.max(-10, Math.min(10, dy * 0.002)));
    const span = Math.min(Math.max((v1 - v0) * f, 1e-7), full * 1.2);
    v0 = tc - (mx - px0) / (px1 - px0) * span;
    v1 = v0 + span;
    clampView();
    tip.style.display = 'none';
    redraw();
  }, { passive: false });
  canvas.addEventListener('mousedown', function (ev) {
    drag = { x: ev.clientX, v0: v0, v1: v1 };
    canvas.classList.add('drag');
    tip.style.display = 'none';
  });
  window.addEventListener('mouseup', function () { drag = null; canvas.classList.remove('drag'); });
  canvas.addEventListener('mousemove', function (ev) {
    const r = canvas.getBoundingClientRect();
    const mx = ev.clientX - r.left, my = ev.clientY - r.top;
    if (drag) {
      const dt = (ev.clientX - drag.x) / (px1 - px0) * (drag.v1 - drag.v0);
      v0 = drag.v0 - dt; v1 = drag.v1 - dt;
      clampView();
      redraw();
      return;
    }
    showTip(hit(mx, my), mx, my);
  });
  canvas.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
  function reset() { v0 = 0; v1 = full; redraw(); }
  canvas.addEventListener('dblclick', reset);
  document.getElementById('reset').addEventListener('click', reset);
  window.addEventListener('resize', function () { layout(); redraw(); });
  layout();
  draw();

  // `page.html#selftest`: hovers the widest box, zooms in at the centre and
  // writes what happened as JSON into a <pre> with id "selftest" at the end
  // of the body, so a headless browser (chromium --dump-dom) can check the
  // interaction code (tests/unit/tools/viz_test.cpp).
  if (window.location.hash === '#selftest') {
    const out = { items: n, lanes: lanes.length };
    let widest = -1;
    for (let i = 0; i < n; i++) {
      if (styles[S[i]][3] === 0 && (widest < 0 || T1[i] - T0[i] > T1[widest] - T0[widest])) widest = i;
    }
    const r = canvas.getBoundingClientRect();
    if (widest >= 0) {
      const l = lanes.findIndex(function (_, k) { return widest >= lo[k] && widest < lo[k + 1]; });
      const x = xOf((T0[widest] + T1[widest]) / 2), y = laneY(l) + MARK_H + BOX_H / 2;
      canvas.dispatchEvent(new MouseEvent('mousemove', { clientX: r.left + x, clientY: r.top + y, bubbles: true }));
      out.hovered = widest;
      out.tip = tip.style.display === 'block' ? tip.textContent : '';
    }
    const span0 = v1 - v0;
    canvas.dispatchEvent(new WheelEvent('wheel', { clientX: r.left + (px0 + px1) / 2, clientY: r.top + lanesY0 + 5,
      deltaY: -300, bubbles: true, cancelable: true }));
    out.zoom = span0 / (v1 - v0);
    draw();
    out.range = document.getElementById('range').textContent;
    reset();
    const pre = document.createElement('pre');
    pre.id = 'selftest';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
})();
</script>
</body></html>
)JS";

const char* shape_name(VizShape s) {
  switch (s) {
    case VizShape::Box:
      return "box";
    case VizShape::TriangleOpen:
      return "triangle-open";
    case VizShape::Triangle:
      return "triangle";
    case VizShape::Cross:
      return "cross";
    case VizShape::Circle:
      return "circle";
    case VizShape::CircleOpen:
      return "circle-open";
    case VizShape::Square:
      return "square";
    case VizShape::Diamond:
      return "diamond";
    case VizShape::Tick:
      return "tick";
  }
  return "tick";
}

}  // namespace

std::string render_viz_html(const VizTimeline& t, int width) {
  (void)width;  // the page follows the browser window's width
  std::string out;
  out.reserve(64 * t.items.size() + 65536);
  out += kHead;
  out += html_escape(t.title);
  out += kStyleAndBody;

  out += "{\"title\":";
  append_json_string(out, t.title);
  out += ",\"subtitle\":";
  append_json_string(out, t.subtitle);
  char buf[64];
  std::snprintf(buf, sizeof buf, ",\"duration\":%.9g", t.duration_s);
  out += buf;
  out += ",\"laneColor\":\"" + hex_color(kVizLaneRgb) + "\",\"laneAltColor\":\"" +
         hex_color(kVizLaneAltRgb) + "\"";
  out += ",\"compiled\":" + std::to_string(static_cast<int>(VizStyle::Compiled));
  out += ",\"unknownOp\":" + std::to_string(static_cast<int>(VizStyle::UnknownOp));
  out += ",\"send\":" + std::to_string(static_cast<int>(VizStyle::Send));
  out += ",\"recv\":" + std::to_string(static_cast<int>(VizStyle::Recv));
  out += ",\"styles\":[";
  for (int s = 0; s < kVizStyleCount; ++s) {
    const auto& info = kVizStyles[s];
    const auto style = static_cast<VizStyle>(s);
    if (s > 0) out += ',';
    out += '[';
    append_json_string(out, info.label);
    out += ",\"" + hex_color(info.rgb) + "\",\"" + shape_name(info.shape) + "\",";
    out += viz_is_box(style) ? '0' : (viz_is_tick(style) ? '2' : '1');
    out += ']';
  }
  out += "],\"lanes\":[";
  for (size_t l = 0; l < t.lanes.size(); ++l) {
    if (l > 0) out += ',';
    append_json_string(out, t.lanes[l]);
  }
  // lo[l] = first item of lane l; items are sorted by lane.
  out += "],\"busy\":[";
  for (size_t l = 0; l < t.lane_busy.size(); ++l) {
    if (l > 0) out += ',';
    std::snprintf(buf, sizeof buf, "%.4f", t.lane_busy[l]);
    out += buf;
  }
  out += "],\"lo\":[";
  size_t i = 0;
  for (size_t l = 0; l <= t.lanes.size(); ++l) {
    while (i < t.items.size() && t.items[i].lane < l) ++i;
    if (l > 0) out += ',';
    out += std::to_string(i);
  }
  out += ']';

  // Columns. `n` indexes `names` (event kind/op), `x` indexes `details`,
  // `ops` are the op names for box labels (by `n`).
  Strings names, details;
  std::vector<uint32_t> n_col, x_col;
  n_col.reserve(t.items.size());
  x_col.reserve(t.items.size());
  std::vector<std::string> ops_by_name;
  for (const auto& item : t.items) {
    const LogEvent& e = t.events[item.event];
    std::string name = e.event + " " + e.kind;
    if (!e.op.empty()) name += "/" + e.op;
    const uint32_t ni = names.index(name);
    if (ni == ops_by_name.size()) ops_by_name.push_back(e.op);
    n_col.push_back(ni);
    x_col.push_back(details.index(e.details));
  }
  auto column = [&](const char* key, auto&& value) {
    out += ",\"";
    out += key;
    out += "\":[";
    for (size_t k = 0; k < t.items.size(); ++k) {
      if (k > 0) out += ',';
      value(k);
    }
    out += ']';
  };
  column("s", [&](size_t k) { out += std::to_string(static_cast<int>(t.items[k].style)); });
  column("t", [&](size_t k) { append_number(out, t.items[k].start_s * 1e6); });
  column("d", [&](size_t k) { append_number(out, (t.items[k].end_s - t.items[k].start_s) * 1e6); });
  column("n", [&](size_t k) { out += std::to_string(n_col[k]); });
  column("x", [&](size_t k) { out += std::to_string(x_col[k]); });
  column("q", [&](size_t k) { out += std::to_string(t.events[t.items[k].event].seq); });
  column("o", [&](size_t k) { out += std::to_string(t.items[k].ops); });
  out += ",\"names\":";
  names.append_json(out);
  out += ",\"ops\":[";
  for (size_t k = 0; k < ops_by_name.size(); ++k) {
    if (k > 0) out += ',';
    append_json_string(out, ops_by_name[k]);
  }
  out += "],\"details\":";
  details.append_json(out);
  out += '}';
  out += kScript;
  return out;
}

}  // namespace gt::tools
