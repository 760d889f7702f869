// The console: a page per path (executions list, one execution, the cluster), refreshed live.

import { showCluster } from "./cluster.js";
import { showExecution } from "./execution.js";
import { showList } from "./list.js";
import { go } from "./nav.js";

let stopPage = () => {};

function route() {
  stopPage();
  const page = document.getElementById("page");
  page.replaceChildren();
  const path = location.pathname;
  const match = path.match(/^\/executions\/([^/]+)$/);
  let section = "executions";
  if (match) {
    stopPage = showExecution(page, decodeURIComponent(match[1]));
  } else if (path === "/cluster") {
    section = "cluster";
    stopPage = showCluster(page);
  } else {
    stopPage = showList(page);
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
}


// Links inside the console change the page without reloading it.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || link.origin !== location.origin || event.ctrlKey || event.metaKey || event.button !== 0) return;
  if (link.pathname.startsWith("/api/") || link.pathname === "/metrics") return;
  event.preventDefault();
  go(link.pathname + link.search);
});
window.addEventListener("popstate", route);
window.addEventListener("tukio:navigate", route);
route();
