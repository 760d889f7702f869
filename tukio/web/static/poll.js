// Run `refresh` now and every `period` ms until stopped; a failure is shown and retried.

import { setStatus } from "./format.js";

export function poll(refresh, period = 1000) {
  let timer = null;
  let stopped = false;
  async function tick() {
    try {
      const again = await refresh();
      if (stopped) return;
      setStatus(again === false ? "" : "live");
      if (again !== false) timer = setTimeout(tick, period);
    } catch (error) {
      if (stopped) return;
      setStatus(`error: ${error.message}`, true);
      timer = setTimeout(tick, period * 3);
    }
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
