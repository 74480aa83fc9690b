// `gt viz` pictures: PNG, SVG and PDF drawn with cairo (Note [viz drawing]).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <cairo.h>

#include <gt/error.h>

#include "tools/viz.h"

namespace gt::tools {
namespace {

// Note [viz drawing]
// A lane is a band: a marker row on top (COMPILE, HOTPATH, ERROR), the box
// row (EXEC, FREE, FETCH, SYNC, WAIT) and a thin tick row at the bottom
// (SEND, RECV, ...; on client and dispatcher lanes, which have few boxes,
// ticks span the box row too). Idle time is the lane's background.
// Logs hold up to hundreds of thousands of events, far more than pixels:
// boxes thinner than half a pixel are merged with their neighbours in the
// same lane while the gaps between them stay under half a pixel, and drawn
// as one rect in the colour that covers most of it, with an opacity that
// shows how much of the rect was busy. Markers and ticks are drawn once per
// pixel column and style. So the work after sorting is linear in the events
// and the drawn objects are bounded by the width times the lanes, which
// keeps SVG and PDF files small.

constexpr double kMargin = 14;
constexpr double kLaneH = 42;
constexpr double kMarkerRowH = 13;  // top of the lane
constexpr double kBoxRowH = 21;
constexpr double kTickRowH = 8;  // bottom of the lane
constexpr double kAxisH = 36;
constexpr double kLegendRowH = 19;
constexpr double kThin = 0.5;  // px: boxes below this are merged

struct Rgb {
  double r, g, b;
};

Rgb rgb(uint32_t v) {
  return {((v >> 16) & 0xff) / 255.0, ((v >> 8) & 0xff) / 255.0, (v & 0xff) / 255.0};
}

double luminance(uint32_t v) {
  const Rgb c = rgb(v);
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b;
}

void set_color(cairo_t* cr, uint32_t v, double alpha = 1.0) {
  const Rgb c = rgb(v);
  if (alpha >= 1.0) {
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
  } else {
    cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha);
  }
}

void set_font(cairo_t* cr, double size, bool bold = false) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t ext;
  cairo_text_extents(cr, s.c_str(), &ext);
  return ext.x_advance;
}

// Draws `s` with its left end at x (or its right end when align_right) and
// its baseline at y.
void draw_text(cairo_t* cr, const std::string& s, double x, double y, bool align_right = false) {
  if (align_right) x -= text_width(cr, s);
  cairo_move_to(cr, x, y);
  cairo_show_text(cr, s.c_str());
}

// Shortens `s` (whole UTF-8 characters) with an ellipsis until it fits.
std::string fit_text(cairo_t* cr, std::string s, double width) {
  if (text_width(cr, s) <= width) return s;
  while (!s.empty()) {
    do {
      s.pop_back();
    } while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xc0) == 0x80);
    if (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xc0) == 0xc0) s.pop_back();
    if (text_width(cr, s + "\xe2\x80\xa6") <= width) return s + "\xe2\x80\xa6";
  }
  return s;
}

// Draws a marker or legend symbol centred at (x, y), half-size r.
void draw_symbol(cairo_t* cr, VizStyle style, double x, double y, double r) {
  const VizStyleInfo& info = kVizStyles[static_cast<int>(style)];
  set_color(cr, info.rgb);
  cairo_set_line_width(cr, 1.4);
  switch (info.shape) {
    case VizShape::TriangleOpen:
    case VizShape::Triangle:  // pointing down at the moment it happened
      cairo_move_to(cr, x - r, y - r * 0.8);
      cairo_line_to(cr, x + r, y - r * 0.8);
      cairo_line_to(cr, x, y + r);
      cairo_close_path(cr);
      if (info.shape == VizShape::Triangle) {
        cairo_fill(cr);
      } else {
        cairo_stroke(cr);
      }
      break;
    case VizShape::Cross:
      cairo_set_line_width(cr, 2.0);
      cairo_move_to(cr, x - r, y - r);
      cairo_line_to(cr, x + r, y + r);
      cairo_move_to(cr, x + r, y - r);
      cairo_line_to(cr, x - r, y + r);
      cairo_stroke(cr);
      break;
    case VizShape::Circle:
    case VizShape::CircleOpen:
      cairo_new_sub_path(cr);
      cairo_arc(cr, x, y, r * 0.85, 0, 2 * M_PI);
      if (info.shape == VizShape::Circle) {
        cairo_fill(cr);
      } else {
        cairo_stroke(cr);
      }
      break;
    case VizShape::Square:
      cairo_rectangle(cr, x - r * 0.75, y - r * 0.75, r * 1.5, r * 1.5);
      cairo_stroke(cr);
      break;
    case VizShape::Diamond:
      cairo_move_to(cr, x, y - r);
      cairo_line_to(cr, x + r, y);
      cairo_line_to(cr, x, y + r);
      cairo_line_to(cr, x - r, y);
      cairo_close_path(cr);
      cairo_fill_preserve(cr);
      cairo_set_source_rgb(cr, 1, 1, 1);
      cairo_set_line_width(cr, 0.8);
      cairo_stroke(cr);
      break;
    case VizShape::Tick:
      cairo_set_line_width(cr, 1.5);
      cairo_move_to(cr, x, y - r);
      cairo_line_to(cr, x, y + r);
      cairo_stroke(cr);
      break;
    case VizShape::Box:
      break;
  }
}

void hatch(cairo_t* cr, double x0, double y0, double w, double h) {
  cairo_save(cr);
  cairo_rectangle(cr, x0, y0, w, h);
  cairo_clip(cr);
  set_color(cr, 0x8fa3d9);
  cairo_set_line_width(cr, 1.2);
  for (double x = x0 - h; x < x0 + w; x += 6) {
    cairo_move_to(cr, x, y0 + h);
    cairo_line_to(cr, x + h, y0);
  }
  cairo_stroke(cr);
  cairo_restore(cr);
}

std::string busy_label(double share) {
  char buf[32];
  if (share > 0 && share < 0.01) return "busy <1%";
  std::snprintf(buf, sizeof buf, "busy %.0f%%", share * 100);
  return buf;
}

struct NiceTicks {
  double step = 1;
  int decimals = 0;
};

NiceTicks nice_ticks(double span, double pixels) {
  const double target = std::max(2.0, pixels / 110.0);
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  NiceTicks t;
  t.step = step;
  t.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return t;
}

class Painter {
 public:
  Painter(const VizTimeline& t, double width) : t_(t), width_(width) {}

  // Works out the layout with a scratch context (text is measured); returns
  // the height.
  double layout(cairo_t* cr) {
    set_font(cr, 12, true);
    double label_w = 70;
    for (const auto& lane : t_.lanes) label_w = std::max(label_w, text_width(cr, lane));
    // Slack: vector surfaces measure text without hinting, a little wider.
    label_w = std::min(label_w + 6, width_ * 0.3);
    plot_x0_ = kMargin + label_w + 14;
    plot_x1_ = width_ - kMargin - 6;
    lanes_y0_ = kMargin + 46;
    lanes_y1_ = lanes_y0_ + kLaneH * static_cast<double>(t_.lanes.size());

    for (const auto& item : t_.items) present_[static_cast<int>(item.style)] = true;
    busy_ = t_.lane_busy;
    legend_ = legend_entries();
    set_font(cr, 11);
    legend_rows_ = 1;
    double x = plot_x0_;
    for (const auto& e : legend_) {
      const double w = 26 + text_width(cr, e.label) + 16;
      if (x + w > plot_x1_ && x > plot_x0_) {
        ++legend_rows_;
        x = plot_x0_;
      }
      x += w;
    }
    return std::ceil(lanes_y1_ + kAxisH + kLegendRowH * legend_rows_ + kMargin);
  }

  void paint(cairo_t* cr) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    span_ = t_.duration_s > 0 ? t_.duration_s : 1e-3;
    scale_ = (plot_x1_ - plot_x0_) / span_;
    draw_header(cr);
    draw_lanes_background(cr);
    draw_grid(cr);
    for (uint32_t lane = 0, i = 0; lane < t_.lanes.size(); ++lane) {
      const uint32_t begin = i;
      while (i < t_.items.size() && t_.items[i].lane == lane) ++i;
      draw_lane(cr, lane, begin, i);
    }
    draw_axis(cr);
    draw_legend(cr);
  }

 private:
  struct LegendEntry {
    std::string label;
    int style;  // -1: idle (lane background)
  };

  std::vector<LegendEntry> legend_entries() const {
    std::vector<LegendEntry> out;
    for (int s = 0; s < kVizStyleCount; ++s) {
      if (present_[s]) out.push_back({std::string(kVizStyles[s].label), s});
    }
    out.push_back({"idle", -1});
    return out;
  }

  double x_of(double t) const { return plot_x0_ + t * scale_; }
  double lane_y(uint32_t lane) const { return lanes_y0_ + kLaneH * lane; }

  void draw_header(cairo_t* cr) {
    set_color(cr, 0x1a1a1a);
    set_font(cr, 17, true);
    draw_text(cr, fit_text(cr, t_.title, width_ - 2 * kMargin), kMargin, kMargin + 16);
    set_color(cr, 0x666666);
    set_font(cr, 11);
    draw_text(cr, fit_text(cr, t_.subtitle, width_ - 2 * kMargin), kMargin, kMargin + 34);
  }

  void draw_lanes_background(cairo_t* cr) {
    for (uint32_t lane = 0; lane < t_.lanes.size(); ++lane) {
      const double y = lane_y(lane);
      set_color(cr, lane % 2 == 0 ? kVizLaneRgb : kVizLaneAltRgb);
      cairo_rectangle(cr, plot_x0_, y, plot_x1_ - plot_x0_, kLaneH);
      cairo_fill(cr);
      // Label, and the busy share of lanes with boxes.
      set_color(cr, 0x1a1a1a);
      set_font(cr, 12, true);
      const double label_w = plot_x0_ - kMargin - 14;
      const bool busy = busy_[lane] >= 0;
      draw_text(cr, fit_text(cr, t_.lanes[lane], label_w), kMargin, y + (busy ? 20 : 26));
      if (busy) {
        set_color(cr, 0x666666);
        set_font(cr, 10);
        draw_text(cr, busy_label(busy_[lane]), kMargin, y + 33);
      }
    }
    set_color(cr, 0xc8ccd4);
    cairo_set_line_width(cr, 1);
    for (uint32_t lane = 0; lane <= t_.lanes.size(); ++lane) {
      const double y = std::round(lane_y(lane)) + 0.5;
      cairo_move_to(cr, kMargin, y);
      cairo_line_to(cr, plot_x1_, y);
    }
    cairo_stroke(cr);
  }

  void draw_grid(cairo_t* cr) {
    ticks_ = nice_ticks(span_, plot_x1_ - plot_x0_);
    set_color(cr, 0xffffff);
    cairo_set_line_width(cr, 1);
    for (double v = 0; v <= span_ + ticks_.step * 1e-6; v += ticks_.step) {
      const double x = std::round(x_of(v)) + 0.5;
      cairo_move_to(cr, x, lanes_y0_);
      cairo_line_to(cr, x, lanes_y1_);
    }
    cairo_stroke(cr);
  }

  void draw_axis(cairo_t* cr) {
    const double y = std::round(lanes_y1_) + 0.5;
    set_color(cr, 0x444444);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, plot_x0_, y);
    cairo_line_to(cr, plot_x1_, y);
    set_font(cr, 11);
    double last_right = -1e9;
    for (double v = 0; v <= span_ + ticks_.step * 1e-6; v += ticks_.step) {
      const double x = std::round(x_of(v)) + 0.5;
      cairo_move_to(cr, x, y);
      cairo_line_to(cr, x, y + 5);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.*f", ticks_.decimals, v);
      const double w = text_width(cr, buf);
      const double left = std::min(x - w / 2, plot_x1_ - w);
      if (left > last_right + 6) {
        draw_text(cr, buf, left, y + 17);
        last_right = left + w;
      }
    }
    cairo_stroke(cr);
    set_color(cr, 0x666666);
    draw_text(cr, "seconds", kMargin, y + 17);
  }

  void draw_legend(cairo_t* cr) {
    set_font(cr, 11);
    double x = plot_x0_;
    double y = lanes_y1_ + kAxisH + 4;
    for (const auto& e : legend_) {
      const double w = 26 + text_width(cr, e.label) + 16;
      if (x + w > plot_x1_ && x > plot_x0_) {
        y += kLegendRowH;
        x = plot_x0_;
      }
      if (e.style < 0) {
        set_color(cr, kVizLaneRgb);
        cairo_rectangle(cr, x, y - 5, 20, 11);
        cairo_fill_preserve(cr);
        set_color(cr, 0xb0b4bc);
        cairo_set_line_width(cr, 1);
        cairo_stroke(cr);
      } else if (viz_is_box(static_cast<VizStyle>(e.style))) {
        set_color(cr, kVizStyles[e.style].rgb);
        cairo_rectangle(cr, x, y - 5, 20, 11);
        cairo_fill(cr);
        if (e.style == static_cast<int>(VizStyle::Compiled)) {
          hatch(cr, x, y - 5, 20, 11);
        }
      } else {
        draw_symbol(cr, static_cast<VizStyle>(e.style), x + 10, y, 5);
      }
      set_color(cr, 0x333333);
      draw_text(cr, e.label, x + 26, y + 4);
      x += w;
    }
  }

  // Merged thin boxes (Note [viz drawing]).
  struct Run {
    bool active = false;
    double x0 = 0, x1 = 0;
    std::array<double, kVizStyleCount> cover{};
  };

  void flush(cairo_t* cr, Run& run, double y) {
    if (!run.active) return;
    run.active = false;
    int best = 0;
    double total = 0;
    for (int s = 0; s < kVizStyleCount; ++s) {
      total += run.cover[s];
      if (run.cover[s] > run.cover[best]) best = s;
    }
    const double w = std::max(run.x1 - run.x0, 1.0);
    const double alpha = std::clamp(total / w, 0.45, 1.0);
    set_color(cr, kVizStyles[best].rgb, alpha);
    cairo_rectangle(cr, run.x0, y, w, kBoxRowH);
    cairo_fill(cr);
  }

  void draw_box(cairo_t* cr, const VizItem& item, double x0, double x1, double y) {
    const VizStyleInfo& info = kVizStyles[static_cast<int>(item.style)];
    // Clip to the plot so huge zoomed-out numbers never reach cairo.
    x0 = std::max(x0, plot_x0_ - 2);
    x1 = std::min(x1, plot_x1_ + 2);
    const double w = x1 - x0;
    const double gap = w >= 4 ? 1 : 0;  // keeps neighbouring wide boxes apart
    set_color(cr, info.rgb);
    cairo_rectangle(cr, x0, y, w - gap, kBoxRowH);
    cairo_fill(cr);
    std::string label;
    if (item.style == VizStyle::Compiled) {
      if (w >= 4) {
        hatch(cr, x0, y, w - gap, kBoxRowH);
        set_color(cr, 0x0b1330);
        cairo_set_line_width(cr, 1.5);
        cairo_rectangle(cr, x0 + 0.75, y + 0.75, w - gap - 1.5, kBoxRowH - 1.5);
        cairo_stroke(cr);
      }
      label = std::to_string(item.ops) + " ops";
    } else if (item.style <= VizStyle::UnknownOp) {
      label = t_.events[item.event].op;
    }
    if (label.empty() || w < 24) return;
    set_font(cr, 10, item.style == VizStyle::Compiled);
    const double tw = text_width(cr, label);
    if (tw + 6 > w - gap) return;
    if (item.style == VizStyle::Compiled) {
      // A solid plate keeps the count readable over the hatching.
      set_color(cr, info.rgb);
      cairo_rectangle(cr, x0 + (w - gap - tw) / 2 - 2, y + 4, tw + 4, kBoxRowH - 8);
      cairo_fill(cr);
    }
    set_color(cr, luminance(info.rgb) < 0.55 ? 0xffffff : 0x1a1a1a);
    draw_text(cr, label, x0 + (w - gap - tw) / 2, y + kBoxRowH / 2 + 3.5);
  }

  void draw_lane(cairo_t* cr, uint32_t lane, uint32_t begin, uint32_t end) {
    const double y = lane_y(lane);
    const double box_y = y + kMarkerRowH;
    const bool worker = t_.lanes[lane].rfind("WORKER", 0) == 0;
    Run run;
    for (uint32_t i = begin; i < end; ++i) {
      const VizItem& item = t_.items[i];
      if (!viz_is_box(item.style)) continue;
      const double x0 = x_of(item.start_s), x1 = x_of(item.end_s);
      if (x1 - x0 >= kThin) {
        flush(cr, run, box_y);
        draw_box(cr, item, x0, x1, box_y);
        continue;
      }
      if (run.active && x0 > run.x1 + kThin) flush(cr, run, box_y);
      if (!run.active) {
        run.active = true;
        run.x0 = x0;
        run.x1 = x1;
        run.cover.fill(0);
      }
      run.x1 = std::max(run.x1, x1);
      // By width, so long ops win the colour; zero-length boxes (no dur_us)
      // count as a sliver.
      run.cover[static_cast<int>(item.style)] += std::max(x1 - x0, 1e-3);
    }
    flush(cr, run, box_y);

    // Ticks, then markers on top; one per pixel column and style.
    std::array<long, kVizStyleCount> last_col;
    last_col.fill(-1);
    const double tick_y1 = y + kLaneH - 1;
    const double tick_y0 = worker ? tick_y1 - kTickRowH + 1 : box_y;
    cairo_set_line_width(cr, 1);
    double marker_x = -1e9, cluster_x = -1e9;
    for (int pass = 0; pass < 2; ++pass) {
      for (uint32_t i = begin; i < end; ++i) {
        const VizItem& item = t_.items[i];
        if (viz_is_box(item.style) || viz_is_tick(item.style) != (pass == 0)) continue;
        const double x = x_of(item.start_s);
        const long col = std::lround(x);
        const int s = static_cast<int>(item.style);
        if (col == last_col[s]) continue;
        last_col[s] = col;
        if (pass == 0) {
          // SEND in the upper half, RECV in the lower, so both show.
          const double mid = (tick_y0 + tick_y1) / 2;
          double a = tick_y0, b = tick_y1;
          if (item.style == VizStyle::Send) b = mid;
          if (item.style == VizStyle::Recv) a = mid;
          set_color(cr, kVizStyles[s].rgb, 0.85);
          cairo_move_to(cr, col + 0.5, a);
          cairo_line_to(cr, col + 0.5, b);
          cairo_stroke(cr);
        } else {
          // Markers closer than their size (a HOTPATH and the COMPILE it
          // starts) are nudged apart so each stays visible, within a few
          // pixels of where they happened.
          double mx = x;
          if (x < marker_x + 8 && x - cluster_x < 24) {
            mx = marker_x + 8;
          } else {
            cluster_x = x;
          }
          marker_x = mx;
          draw_symbol(cr, item.style, mx, y + kMarkerRowH / 2 + 0.5, 4.5);
        }
      }
    }
  }

  const VizTimeline& t_;
  const double width_;
  double plot_x0_ = 0, plot_x1_ = 0, lanes_y0_ = 0, lanes_y1_ = 0;
  double span_ = 1, scale_ = 1;
  NiceTicks ticks_;
  std::array<bool, kVizStyleCount> present_{};
  std::vector<LegendEntry> legend_;
  int legend_rows_ = 1;
  std::vector<double> busy_;
};

cairo_status_t append_bytes(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

void check(cairo_status_t status, const char* what) {
  if (status != CAIRO_STATUS_SUCCESS) {
    throw Error(std::string("[viz.render] ") + what + " failed: " + cairo_status_to_string(status));
  }
}

}  // namespace

std::string render_viz_cairo(const VizTimeline& t, VizImage format, int width) {
  Painter painter(t, width);
  double height = 0;
  {
    cairo_surface_t* scratch = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1);
    cairo_t* cr = cairo_create(scratch);
    height = painter.layout(cr);
    cairo_destroy(cr);
    cairo_surface_destroy(scratch);
  }
  std::string out;
  cairo_surface_t* surface = nullptr;
  switch (format) {
    case VizImage::Png:
      surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, static_cast<int>(height));
      break;
    case VizImage::Svg:
      surface = cairo_svg_surface_create_for_stream(append_bytes, &out, width, height);
      break;
    case VizImage::Pdf:
      surface = cairo_pdf_surface_create_for_stream(append_bytes, &out, width, height);
      break;
  }
  check(cairo_surface_status(surface), "creating the surface");
  cairo_t* cr = cairo_create(surface);
  painter.paint(cr);
  const cairo_status_t drawn = cairo_status(cr);
  cairo_destroy(cr);
  if (drawn != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(surface);
    check(drawn, "drawing");
  }
  cairo_status_t status = CAIRO_STATUS_SUCCESS;
  if (format == VizImage::Png) {
    cairo_surface_flush(surface);
    status = cairo_surface_write_to_png_stream(surface, append_bytes, &out);
  } else {
    cairo_surface_finish(surface);
    status = cairo_surface_status(surface);
  }
  cairo_surface_destroy(surface);
  check(status, "writing");
  return out;
}

}  // namespace gt::tools
