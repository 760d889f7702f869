// Calls to the JSON API: the bearer token (asked once, kept for the tab) and the action header.

const TOKEN_KEY = "tukio-token";

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function askToken() {
  const dialog = document.getElementById("login");
  const input = document.getElementById("login-token");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      resolve();
    }, { once: true });
    dialog.showModal();
  });
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function call(path, { method = "GET", body } = {}) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const secret = token();
    if (secret) headers.Authorization = `Bearer ${secret}`;
    if (method !== "GET") {
      headers["X-Tukio-Action"] = "1";
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401) {
      await askToken();
      continue;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, data.error || response.statusText);
    return data;
  }
}

// Ask the user to confirm `text`; resolves to true when they do.
export function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}
