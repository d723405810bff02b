// The dashboard's only script: draws the charts and wires the copy buttons. Every page works
// without it (forms post as usual).
// Loaded with <script src defer> after vendor/uplot/uPlot.iife.min.js. The page's CSP forbids
// inline script and style attributes in markup; styles set through the CSSOM (element.style, as
// uPlot and this file do) are allowed.
(function () {
  "use strict";

  const HEIGHT = 240;
  const DAY = 86400;
  // Okabe & Ito's palette, told apart with the common colour-vision deficiencies (its yellow is
  // left out: too pale on white).
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"];
  // Tick steps: whole days for x (the data has one point a day), whole numbers for y (counts).
  const DAY_STEPS = [1, 2, 7, 14, 28, 56, 91, 182, 364].map((d) => d * DAY);
  const COUNT_STEPS = [];
  for (let p = 1; p <= 1e12; p *= 10) COUNT_STEPS.push(p, 2 * p, 5 * p);

  // "2026-11-01" -> Unix seconds at that day's UTC midnight.
  function utcSeconds(isoDay) {
    const [y, m, d] = isoDay.split("-").map(Number);
    return Date.UTC(y, m - 1, d) / 1000;
  }

  // Labels in UTC too: by default uPlot shows the viewer's local time, which would put a UTC
  // midnight on the previous day west of Greenwich.
  function utcDate(seconds) {
    return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC");
  }

  // First to last day; a single day (or none: today) has no width of its own, so a day either
  // side. uPlot's own widening of a single time value is far too wide for seconds.
  function dayRange(xs) {
    if (xs.length > 1) return [xs[0], xs[xs.length - 1]];
    const day = xs.length ? xs[0] : Math.floor(Date.now() / 1000 / DAY) * DAY;
    return [day - DAY, day + DAY];
  }

  function options(spec, xs, width) {
    return {
      width: width,
      height: HEIGHT,
      tzDate: utcDate,
      scales: {
        x: { time: true, range: dayRange(xs) },
        // From 0, and never an empty range (all zero, or no series at all).
        y: { range: (u, min, max) => [0, max > 0 ? uPlot.rangeNum(0, max, 0.1, true)[1] : 1] },
      },
      series: [{ label: "Day", value: "{YYYY}-{MM}-{DD}" }].concat(
        spec.series.map((s, i) => ({
          label: s.label,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          points: { size: 5 },
        }))
      ),
      axes: [
        { incrs: DAY_STEPS, values: "{MMM} {D}" },
        { label: spec.y_label || "", incrs: COUNT_STEPS, size: 60 },
      ],
    };
  }

  function draw(plot) {
    const source = document.getElementById(plot.dataset.chart);
    if (!source) throw new Error("chart " + plot.dataset.chart + ": no JSON block with that id");
    const spec = JSON.parse(source.textContent);
    const series = spec.series || [];
    const xs = spec.x.map(utcSeconds);
    const data = [xs].concat(series.map((s) => s.values));
    const opts = options({ series: series, y_label: spec.y_label }, xs, plot.clientWidth);
    return new uPlot(opts, data, plot);
  }

  const charts = [];
  document.querySelectorAll(".chart-plot[data-chart]").forEach((plot) => {
    try {
      charts.push({ plot: plot, chart: draw(plot) });
    } catch (error) {
      console.error(error); // one broken chart must not stop the others
    }
  });

  // Follow the container's width, once the window has stopped changing size for a moment.
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      charts.forEach((c) => c.chart.setSize({ width: c.plot.clientWidth, height: HEIGHT }));
    }, 150);
  });

  // Copy buttons are rendered `hidden` and shown here: without JS, or where the Clipboard API is
  // missing (pages not served over HTTPS or from localhost), they could do nothing.
  document.querySelectorAll("button.copy[data-copy-target]").forEach((button) => {
    const target = document.getElementById(button.dataset.copyTarget);
    if (!target || !navigator.clipboard) return;
    const label = button.textContent;
    let resetTimer = null;
    button.hidden = false;
    button.addEventListener("click", () => {
      const isField = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
      const text = (isField ? target.value : target.textContent).trim();
      navigator.clipboard.writeText(text).then(
        () => {
          button.textContent = "Copied";
          clearTimeout(resetTimer);
          resetTimer = setTimeout(() => {
            button.textContent = label;
          }, 2000);
        },
        (error) => console.error("copy failed:", error)
      );
    });
  });
})();
