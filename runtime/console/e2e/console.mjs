// Browser test of eventgen's web console, run by TestBrowser
// (runtime/console/browser_test.go), which seeds the database, serves the
// console and checks the database afterwards. It drives Debian's Chromium
// headless through playwright-core and fails (exit 1) at the first check
// that does not hold.
//
// Environment: BASE (the console, e.g. http://127.0.0.1:PORT/ops), RO_BASE
// (a read-only console on the same tables), ATTACKER (a page on another
// origin that posts a form to the console), TOKEN, IDS (JSON: failed, evil,
// pending, total, inboxEvil, and the blocked key: blockedKey, blockedNext,
// blockedHeld), SHOTS (a folder for screenshots), CHROMIUM.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('BASE'), RO_BASE = env('RO_BASE'), ATTACKER = env('ATTACKER'), TOKEN = env('TOKEN');
const IDS = JSON.parse(env('IDS'));
const SHOTS = env('SHOTS');

const step = (name) => console.log(`step: ${name}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // As root on Debian's Chromium; without the background-networking
  // flags it keeps dialling Google's hosts, which this network refuses.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
try {
  step('an unauthenticated visit is refused');
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    // Headless Chromium cannot show the login prompt: the navigation fails,
    // or shows the 401 page.
    const refused = async (p, url) => {
      try {
        return (await p.goto(url)).status() === 401;
      } catch (e) {
        return /ERR_INVALID_AUTH_CREDENTIALS/.test(String(e));
      }
    };
    assert.ok(await refused(page, `${BASE}/`));
    const resp = await ctx.request.get(`${BASE}/`);
    assert.equal(resp.status(), 401);
    assert.match(resp.headers()['www-authenticate'] || '', /^Basic /);
    assert.doesNotMatch(await resp.text(), /Overview/);
    const wrong = await browser.newContext({ httpCredentials: { username: 'mallory', password: 'not-the-token-0123456789' } });
    assert.ok(await refused(await wrong.newPage(), `${BASE}/outbox`));
    assert.equal((await wrong.request.get(`${BASE}/outbox`)).status(), 401);
    await ctx.close();
    await wrong.close();
  }

  const ctx = await browser.newContext({
    httpCredentials: { username: 'alice', password: TOKEN },
    viewport: { width: 1280, height: 900 },
  });
  const page = await ctx.newPage();
  const dialogs = [], consoleMessages = [], pageErrors = [];
  page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.on('console', (m) => consoleMessages.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  const go = async (url) => {
    const resp = await page.goto(url);
    assert.equal(resp.status(), 200, `GET ${url}`);
    return resp;
  };

  step('the overview shows the counts and a chart');
  {
    const resp = await go(`${BASE}/`);
    const csp = resp.headers()['content-security-policy'];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(await page.locator('section.card').count(), 2);
    const outbox = page.locator('section.card').first();
    assert.equal(await outbox.locator('a.count[data-status="failed"]').textContent(), '2');
    assert.equal(await outbox.locator('a.count[data-status="scheduled"]').textContent(), '1');
    assert.equal(await outbox.locator('a.count[data-status="pending"]').textContent(), '1');
    const inbox = page.locator('section.card').nth(1);
    assert.equal(await inbox.locator('a.count[data-status="failed"]').textContent(), '3');
    assert.equal(await inbox.locator('a.count[data-status="held"]').textContent(), '2');
    assert.equal(await page.locator('svg.chart').count(), 2);
    assert.ok(await outbox.locator('svg.chart rect.bar').count() >= 1, 'the outbox chart has bars');
    // The stylesheet loaded (the counts are styled), so 'self' assets work under the CSP.
    assert.equal(await page.locator('header').evaluate((e) => getComputedStyle(e).display), 'flex');
    await page.screenshot({ path: path.join(SHOTS, 'overview.png'), fullPage: true });
  }

  step('filtering the list');
  {
    await page.locator('section.card').first().locator('a.count[data-status="failed"]').click();
    assert.equal(await page.locator('tr[data-id]').count(), 2);
    await page.fill('input[name="key"]', 'order-evil');
    await page.click('form.filter button[type="submit"]');
    assert.match(page.url(), /key=order-evil/);
    assert.deepEqual(await page.locator('tr[data-id]').evaluateAll((rs) => rs.map((r) => Number(r.dataset.id))), [IDS.evil]);
    await page.click('#select');
    assert.match(page.url(), /select=all/);
    assert.equal(await page.locator('input[type="checkbox"]:checked').count(), 1);
    await page.selectOption('select[name="status"]', 'published');
    await page.click('form.filter button[type="submit"]');
    assert.equal(await page.locator('tr[data-id]').count(), 0);
    assert.match(await page.locator('td.empty').textContent(), /No events match/);
  }

  step('keyset paging walks every row once, newest first');
  {
    await go(`${BASE}/outbox`);
    const seen = [];
    for (let i = 0; i < 20; i++) {
      seen.push(...await page.locator('tr[data-id]').evaluateAll((rs) => rs.map((r) => Number(r.dataset.id))));
      if (i === 1) await page.screenshot({ path: path.join(SHOTS, 'list.png'), fullPage: true });
      const older = page.locator('#older');
      if (await older.count() === 0) break;
      await older.click();
      assert.match(page.url(), /before=\d+/);
    }
    assert.equal(seen.length, IDS.total, `rows seen: ${seen}`);
    assert.equal(new Set(seen).size, seen.length, `a row twice: ${seen}`);
    assert.deepEqual(seen, [...seen].sort((a, b) => b - a));
    await page.click('#newer');
    assert.match(page.url(), /after=\d+/);
    assert.equal(await page.locator('tr[data-id]').count(), 2);
  }

  step('an injected payload, header and error render as text, and run nothing');
  {
    await go(`${BASE}/outbox/${IDS.evil}`);
    const payload = await page.locator('#payload').textContent();
    assert.ok(payload.includes('<script>alert(\\"xss\\")</script>'), payload);
    assert.ok(payload.includes('<img src=x onerror=alert(1)>'), payload);
    assert.ok((await page.locator('#last-error').textContent()).includes('boom: <script>'));
    assert.ok((await page.locator('table.headers').textContent()).includes('<img src=x onerror=alert(1)>'));
    assert.equal(await page.locator('script').count(), 0);
    assert.equal(await page.locator('main img').count(), 0);
    await page.screenshot({ path: path.join(SHOTS, 'event.png'), fullPage: true });
    await go(`${BASE}/inbox/billing/${IDS.inboxEvil}`);
    assert.ok((await page.locator('#payload').textContent()).includes('<script>alert(\\"xss\\")</script>'));
    assert.ok((await page.locator('#last-error').textContent()).includes('panic: <script>'));
    assert.equal(await page.locator('main img').count(), 0);
    await page.waitForTimeout(300); // an onerror or a script would have run by now
    assert.deepEqual(dialogs, [], 'no dialog opened');
    assert.deepEqual(pageErrors, []);
  }

  step('requeue, with its confirmation');
  {
    await go(`${BASE}/outbox/${IDS.failed}`);
    await page.click('form.actions button[value="requeue"]');
    assert.match(await page.locator('#confirm-count').textContent(), /will change 1 of the 1 events/);
    await page.screenshot({ path: path.join(SHOTS, 'confirm.png'), fullPage: true });
    await page.click('#confirm');
    assert.match(page.url(), new RegExp(`/outbox/${IDS.failed}\\?done=requeue&n=1$`));
    assert.equal(await page.locator('#flash').textContent(), 'Requeue: 1 events changed');
    assert.equal(await page.locator('dt:text-is("Status") + dd').textContent(), 'pending');
  }

  step('delete a selection from the list');
  {
    await go(`${BASE}/outbox?status=pending`);
    await page.check(`tr[data-id="${IDS.pending}"] input[type="checkbox"]`);
    await page.click('div.actions button[value="delete"]');
    assert.match(await page.locator('#confirm-count').textContent(), /will change 1 of the 1 events/);
    await page.click('#confirm');
    assert.equal(await page.locator('#flash').textContent(), 'Delete: 1 events changed');
    assert.equal(await page.locator(`tr[data-id="${IDS.pending}"]`).count(), 0);
  }

  step('re-execute an inbox message');
  {
    await go(`${BASE}/inbox/billing/${IDS.inboxEvil}`);
    await page.click('form.actions button[value="reexecute"]');
    await page.click('#confirm');
    assert.equal(await page.locator('#flash').textContent(), 'Re-execute: 1 messages changed');
  }

  step('a blocked key: its event, the events behind it, and a skip with its confirmation');
  {
    await go(`${RO_BASE}/inbox/billing/blocked`);
    assert.equal(await page.locator('#blocked tr[data-key]').count(), 1);
    assert.equal(await page.locator('button.skip').count(), 0, 'read-only: no skip');
    await go(`${BASE}/`);
    await page.locator('section.card').nth(1).locator('a.blocked').click();
    const row = page.locator('#blocked tr[data-key]');
    assert.equal(await row.count(), 1);
    assert.equal(await row.getAttribute('data-key'), IDS.blockedKey);
    assert.equal(await row.locator('td.mono').first().textContent(), IDS.blockedKey, 'the key shows as text');
    assert.equal(await row.locator('td.waiting').textContent(), '2');
    assert.equal(await row.locator('td.status').textContent(), 'failed');
    assert.ok((await row.locator('td.err').textContent()).includes('stock service said <script>'));
    await page.screenshot({ path: path.join(SHOTS, 'blocked.png'), fullPage: true });
    await row.locator('a.next').click();
    assert.match(page.url(), new RegExp(`/inbox/billing/${IDS.blockedNext}$`));
    assert.equal(await page.locator('dt:text-is("Sequence") + dd').textContent(), '2');
    assert.deepEqual(await page.locator('#behind tr[data-id]').evaluateAll((rs) => rs.map((r) => Number(r.dataset.id))), IDS.blockedHeld);
    await page.click('#skip');
    assert.match(await page.locator('#confirm-count').textContent(), /Skip will mark event #2 of key .* as skipped/);
    assert.equal(await page.locator('main script').count(), 0);
    await page.click('#confirm');
    assert.match(page.url(), /\/inbox\/billing\/blocked\?done=skip-next/);
    assert.ok((await page.locator('#flash').textContent()).startsWith('Skipped event 2 of key'));
    // No consumer runs here: event 3, woken, is due and waits for a retrier.
    assert.equal(await page.locator('#blocked tr[data-key] td.status').textContent(), 'due');
    assert.equal(await page.locator('button.skip').count(), 0, 'a due event is not offered for a skip');
    assert.equal(await page.locator('#blocked tr[data-key] a.next').textContent(), '#3');
    await go(`${BASE}/inbox/billing/${IDS.blockedHeld[0]}`);
    assert.equal(await page.locator('dt:text-is("Status") + dd').textContent(), 'pending');
    assert.deepEqual(dialogs, [], 'no dialog opened');
  }

  step('a POST without the CSRF token, or from another origin, is refused');
  {
    const noToken = await ctx.request.post(`${BASE}/outbox/actions`, { form: { action: 'delete', id: String(IDS.evil), confirm: 'yes' } });
    assert.equal(noToken.status(), 403);
    assert.match(await noToken.text(), /CSRF token is missing or wrong/);
    await go(`${BASE}/outbox`);
    const token = await page.locator('input[name="csrf"]').first().inputValue();
    // A real cross-origin form post, with the right token even.
    const attack = await ctx.newPage();
    attack.on('dialog', (d) => d.dismiss());
    await attack.goto(`${ATTACKER}?action=${encodeURIComponent(`${BASE}/outbox/actions`)}&csrf=${encodeURIComponent(token)}&id=${IDS.evil}`);
    const [resp] = await Promise.all([attack.waitForNavigation(), attack.click('#go')]);
    assert.equal(resp.status(), 403);
    assert.match(await attack.locator('#error-message').textContent(), /refused: the request came from another origin/);
    await attack.close();
  }

  step('read-only mode hides and refuses the actions');
  {
    await go(`${RO_BASE}/outbox`);
    assert.equal(await page.locator('input[type="checkbox"]').count(), 0);
    assert.equal(await page.locator('button[name="action"]').count(), 0);
    assert.equal(await page.locator('header .ro').textContent(), 'read-only');
    await go(`${RO_BASE}/outbox/${IDS.evil}`);
    assert.equal(await page.locator('form.actions').count(), 0);
    const refused = await ctx.request.post(`${RO_BASE}/outbox/actions`, { form: { action: 'delete', id: String(IDS.evil), confirm: 'yes' } });
    assert.equal(refused.status(), 403);
  }

  const errors = consoleMessages.filter((m) => m.startsWith('error'));
  assert.deepEqual(errors, [], 'no console errors (CSP violations, failed loads)');
  assert.deepEqual(dialogs, [], 'no dialog opened');
  console.log('ok');
} finally {
  await browser.close();
}
