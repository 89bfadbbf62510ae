// octokit's OAuth methods against `gateway fake-github` (tests/test_fake_github_clients.py runs it):
// `node octokit.mjs '{"url": …, "oauth": [id, secret], "app": [id, secret], "tokens": {…}}'` prints
// one JSON object, what each step saw; the Python test judges it. Tokens are the fake's, made for tests.
import * as oauth from "@octokit/oauth-methods";
import { request as octokitRequest } from "@octokit/request";

const given = JSON.parse(process.argv[2]);
const request = octokitRequest.defaults({ baseUrl: given.url });
const [oauthId, oauthSecret] = given.oauth;
const [appId, appSecret] = given.app;
const asOAuthApp = { clientType: "oauth-app", clientId: oauthId, clientSecret: oauthSecret, request };
const asGitHubApp = { clientType: "github-app", clientId: appId, clientSecret: appSecret, request };
const seen = {};

async function step(name, run) {
  try {
    seen[name] = { ok: true, ...(await run()) };
  } catch (error) {
    seen[name] = { ok: false, status: error.status, message: error.message, data: error.response?.data };
  }
}

async function authorizedCode(clientId) {
  // the web flow's first half, as a browser does it: the fake approves at once (--auto-approve)
  const query = new URLSearchParams({ client_id: clientId, redirect_uri: "http://127.0.0.1/cb", state: "s" });
  const answer = await fetch(`${given.url}/login/oauth/authorize?${query}`, { redirect: "manual" });
  return new URL(answer.headers.get("location")).searchParams.get("code");
}

const t = given.tokens;
await step("checkToken", async () => {
  const { data, authentication } = await oauth.checkToken({ ...asOAuthApp, token: t.check });
  return { login: data.user.login, scopes: authentication.scopes };
});
await step("resetToken", async () => {
  const { authentication } = await oauth.resetToken({ ...asOAuthApp, token: t.reset });
  const again = await oauth.checkToken({ ...asOAuthApp, token: authentication.token });
  return { changed: authentication.token !== t.reset, login: again.data.user.login };
});
await step("deleteToken", async () => ({ status: (await oauth.deleteToken({ ...asOAuthApp, token: t.delete })).status }));
await step("deletedTokenChecked", async () => oauth.checkToken({ ...asOAuthApp, token: t.delete }));
await step("deleteAuthorization", async () => ({
  status: (await oauth.deleteAuthorization({ ...asOAuthApp, token: t.grant })).status,
}));
await step("scopeToken", async () => {
  const { data } = await oauth.scopeToken({ ...asGitHubApp, token: t.scope, target: "octo-org", repositories: ["web"] });
  return { selection: data.installation.repository_selection, account: data.installation.account.login };
});
await step("scopeTokenUnknownTarget", async () =>
  oauth.scopeToken({ ...asGitHubApp, token: t.scopeAgain, target: "nope" }),
);
await step("requestWithoutBody", async () =>
  request("DELETE /applications/{client_id}/token", {
    client_id: oauthId,
    headers: { authorization: `basic ${btoa(`${oauthId}:${oauthSecret}`)}` },
  }),
);
await step("exchangeWebFlowCode", async () => {
  const code = await authorizedCode(oauthId);
  const { authentication } = await oauth.exchangeWebFlowCode({ ...asOAuthApp, code, redirectUrl: "http://127.0.0.1/cb" });
  return { prefix: authentication.token.slice(0, 4) };
});
await step("deviceFlowAndRefresh", async () => {
  const { data } = await oauth.createDeviceCode({ ...asGitHubApp, clientSecret: undefined });
  const exchanged = await oauth.exchangeDeviceCode({ ...asGitHubApp, clientSecret: undefined, code: data.device_code });
  const first = exchanged.authentication;
  const { authentication } = await oauth.refreshToken({ ...asGitHubApp, refreshToken: first.refreshToken });
  return {
    userCode: /^[A-Z]{4}-[A-Z]{4}$/.test(data.user_code),
    prefixes: [first.token.slice(0, 4), first.refreshToken.slice(0, 4), authentication.token.slice(0, 4)],
    expires: Boolean(first.expiresAt && authentication.refreshTokenExpiresAt),
  };
});
await step("refreshTwice", async () => oauth.refreshToken({ ...asGitHubApp, refreshToken: "ghr_never_issued" }));
process.stdout.write(JSON.stringify(seen));
