"use strict";
(function () {
  const { api, el, table, fill, guarded } = TG;
  guarded(async () => {
    const [status, models] = await Promise.all([api("GET", "status"), api("GET", "models")]);
    fill("providers", table([["Provider", (p) => p]], status.providers, "No providers configured."));
    fill("deployments", table([
      ["Deployment", (r) => r.id], ["Provider", (r) => r.provider],
      ["Breaker", (r) => el("span", { class: "state-" + r.state }, r.state)],
      ["Failures in a row", (r) => r.consecutive_failures],
    ], status.deployments, "No deployments configured."));
    fill("models", table([["Model", (m) => m.id], ["Owned by", (m) => m.owned_by]],
      models.data || [], "No models."));
  })();
})();
