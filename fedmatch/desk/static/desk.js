// The desk's only script: zoom the probe and candidate images together (buttons, or + / -
// / 0 on a focused image; the arrow keys scroll it). No other behaviour depends on it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const compare = document.querySelector("[data-compare]");
  if (!compare) {
    return;
  }
  const images = Array.from(compare.querySelectorAll("img.zoomable"));
  const level = compare.querySelector("#zoom-level");
  const toolbar = compare.querySelector(".toolbar");
  let zoom = 1;

  const apply = () => {
    for (const img of images) {
      if (img.naturalWidth > 0) {
        img.style.width = `${Math.round(img.naturalWidth * zoom)}px`;
      }
    }
    if (level) {
      level.textContent = `${Math.round(zoom * 100)} %`;
    }
  };
  const set = (value) => {
    zoom = Math.min(8, Math.max(0.25, value));
    apply();
  };
  const act = (what) => {
    if (what === "in") {
      set(zoom * 1.25);
    } else if (what === "out") {
      set(zoom / 1.25);
    } else {
      set(1);
    }
  };

  if (toolbar && images.length > 0) {
    toolbar.hidden = false;
  }
  for (const button of compare.querySelectorAll("button[data-zoom]")) {
    button.addEventListener("click", () => act(button.dataset.zoom));
  }
  for (const viewport of compare.querySelectorAll(".viewport")) {
    viewport.addEventListener("keydown", (event) => {
      const keys = { "+": "in", "=": "in", "-": "out", "0": "reset" };
      if (event.key in keys && !event.ctrlKey && !event.metaKey && !event.altKey) {
        act(keys[event.key]);
        event.preventDefault();
      }
    });
  }
  for (const img of images) {
    img.addEventListener("load", apply);
  }
  apply();
});
