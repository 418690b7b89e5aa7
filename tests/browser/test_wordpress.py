"""The WordPress plugin on a real WordPress: shortcode and block in Chromium, editors, settings, translations.

One WordPress per session (tests/wordpress.py: its own MariaDB, Debian's WordPress, `php -S`), the relay
(`formrelay serve`) on another 127.0.0.1 port and the sandbox CRM on a third; the plugin is installed from
the zip its build script makes.
"""
from __future__ import annotations

import contextlib
import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from formrelay.sandbox import ServerThread, create_sandbox
from tests.servers import Running, running, toml
from tests.wordpress import PASSWORDS, Site, wordpress

pytestmark = [pytest.mark.e2e, pytest.mark.wordpress]

PERSON = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
TITLE = "Sign the clean air petition"  # the sandbox NGP form's title, as the relay describes it
DELIVERED = "Thank you for signing"      # the start of the relay's success message for it


@dataclass
class Stack:
    site: Site
    relay: Running
    sandbox: ServerThread
    thanks_url: str

    def received(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.sandbox.url}/_control/received/ngp", timeout=5).json()

    def reset(self) -> None:
        requests.post(f"{self.sandbox.url}/_control/reset", timeout=5)


@pytest.fixture(scope="session")
def wp(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("wordpress")
    with contextlib.ExitStack() as stack:
        site = stack.enter_context(wordpress(tmp))
        sandbox = ServerThread(create_sandbox()).start()
        stack.callback(sandbox.stop)
        config = tmp / "formrelay.toml"
        # The relay-side change a WordPress site needs: its origin in allowed_origins. Nothing else.
        config.write_text(toml({"allowed_origins": [site.url], "time_trap_min": 0.5}, sandbox.url,
                               extra=f'success_url = "{site.url}/?pagename=thanks"'))
        relay = stack.enter_context(running("serve", config, tmp, workers=1, threads=4, name="relay"))
        site.option("formrelay_relay_url", relay.url)
        site.option("formrelay_test_csp_relay", relay.url)
        _, thanks = site.page("Thanks", "<!-- wp:paragraph --><p>Thanks from the campaign</p><!-- /wp:paragraph -->")
        yield Stack(site, relay, sandbox, thanks)


@pytest.fixture
def visitor(browser) -> Any:
    """The shared Chromium with no WordPress session (cookies are per host, so every 127.0.0.1 port's go)."""
    forget_cookies(browser)
    return browser


def forget_cookies(browser) -> None:
    browser.get("about:blank")
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})


def wait(browser, predicate, seconds: float = 20):
    return WebDriverWait(browser, seconds).until(lambda d: predicate(d))


def status_text(browser) -> str:
    nodes = browser.find_elements(By.CSS_SELECTOR, ".formrelay-status")
    return nodes[0].text if nodes else ""


def sign(browser) -> None:
    """Fill and send the rendered form, as a person would."""
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form input[name=EmailAddress]"))
    for name, value in PERSON.items():
        browser.find_element(By.NAME, name).send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "form.formrelay-form button[type=submit]").click()


def console_errors(browser, *about: str) -> list[str]:
    """The browser console's errors since the last call that mention any of `about`."""
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and any(word in entry["message"] for word in about)]


def visitor_html(url: str) -> str:
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    return answer.text


def post_text(page: str) -> str:
    """The text of the post's content (the theme's post-content block), tags removed."""
    content = page.split('wp-block-post-content">', 1)[1].split("</div>", 1)[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", content)).split())


def embeds(page: str) -> list[str]:
    return re.findall(r'<div[^>]*data-formrelay-form="[^"]*"[^>]*>', page)


# -- visitors: the shortcode, the block, a cached copy ---------------------------------------------------------------

def test_shortcode_renders_the_form_and_a_submission_reaches_the_crm_once(wp, visitor):
    wp.reset()
    console_errors(visitor)  # forget what earlier pages logged
    _, url = wp.site.page("Join us", '[formrelay form="join" redirect="off" text_submit="Sign now"]')
    visitor.get(url)
    # The page is served with a Content-Security-Policy naming only the site and the relay: no inline script.
    wait(visitor, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form h2"))
    assert visitor.find_element(By.CSS_SELECTOR, "form.formrelay-form h2").text == TITLE
    assert visitor.find_element(By.CSS_SELECTOR, "form.formrelay-form button[type=submit]").text == "Sign now"
    sign(visitor)
    wait(visitor, lambda d: DELIVERED in status_text(d))
    assert visitor.current_url == url  # redirect="off": the relay's success_url was not followed
    (got,) = wp.received()
    assert got["fields"]["EmailAddress"] == ["ann@example.org"]
    assert not console_errors(visitor, "Content Security Policy", wp.relay.url, "formrelay")


def test_block_renders_the_form_and_a_submission_reaches_the_crm_once(wp, visitor):
    wp.reset()
    _, url = wp.site.page("Join by block", '<!-- wp:formrelay/form {"form":"join","redirect":false,'
                                           '"deliveredText":"Merci, c\u2019est re\u00e7u"} /-->', kind="post")
    visitor.get(url)
    sign(visitor)
    wait(visitor, lambda d: "Merci, c\u2019est re\u00e7u" in status_text(d))
    assert len(wp.received()) == 1
    page = visitor_html(url)
    (div,) = embeds(page)
    assert "wp-block-formrelay-form" in div  # the block's own wrapper classes


def test_a_cached_copy_of_the_page_works_and_follows_the_relays_thank_you_page(wp, visitor):
    """A page cache serves the HTML WordPress made for someone else: nothing in it is per visitor."""
    wp.reset()
    _, url = wp.site.page("Join (cached)", '[formrelay form="join"]')
    first, second = visitor_html(url), visitor_html(url)
    assert embeds(first) == embeds(second) and "nonce" not in embeds(first)[0]
    (wp.site.root / "cached-join.html").write_text(first)
    visitor.get(f"{wp.site.url}/cached-join.html")
    sign(visitor)
    wait(visitor, lambda d: "pagename=thanks" in d.current_url)
    assert "Thanks from the campaign" in visitor.find_element(By.TAG_NAME, "body").text
    assert len(wp.received()) == 1


def test_the_relays_script_is_loaded_once_deferred_with_no_inline_script_of_the_plugin(wp):
    _, url = wp.site.page("Two forms", '[formrelay form="join" title="off"]\n'
                                       '<!-- wp:formrelay/form {"form":"join","submitText":"Go \\u003c\\u0022"} /-->')
    page = visitor_html(url)
    assert len(embeds(page)) == 2
    scripts = re.findall(r"<script[^>]*>", page)
    relay_scripts = [tag for tag in scripts if "/static/formrelay.js" in tag]
    assert len(relay_scripts) == 1 and "defer" in relay_scripts[0]
    assert f"{wp.relay.url}/static/formrelay.js" in relay_scripts[0]
    # WordPress names a script's inline additions <handle>-js-extra, -before, -after: the plugin adds none.
    assert not [tag for tag in scripts if re.search(r"id=['\"]formrelay-js-(extra|before|after)", tag)]
    assert len(re.findall(r"/static/formrelay\.css", page)) == 1
    # Every value is escaped: the editor's text with < and " is an attribute value, nothing more.
    assert 'data-formrelay-text-submit="Go &lt;&quot;"' in page
    assert 'data-formrelay-title="off"' in page
    assert "<noscript><p class=\"formrelay-noscript\">This form needs JavaScript.</p></noscript>" in page


# -- editors ---------------------------------------------------------------------------------------------------------

def test_an_editor_without_unfiltered_html_adds_the_shortcode_and_the_block(wp):
    editor = wp.site.login("editor")
    assert wp.site.php(f"echo user_can({wp.site.users['editor']}, 'unfiltered_html') ? 'yes' : 'no';") == "no"
    content = ('[formrelay form="join" text_delivered="Thanks!"]\n'
               '<!-- wp:formrelay/form {"form":"join","showTitle":false} /-->\n'
               '<script>alert("from the editor")</script>')
    answer = editor.post(f"{wp.site.url}/", params={"rest_route": "/wp/v2/pages"}, timeout=30,
                         headers={"X-WP-Nonce": wp.site.rest_nonce(editor)},
                         json={"title": "From the editor", "content": content, "status": "publish"})
    assert answer.status_code == 201, answer.text[:500]
    saved = answer.json()
    raw = saved["content"]["raw"]
    assert '[formrelay form="join" text_delivered="Thanks!"]' in raw
    assert '<!-- wp:formrelay/form {"form":"join","showTitle":false} /-->' in raw
    assert "<script>" not in raw  # kses ran: this editor really has no unfiltered_html
    page = visitor_html(saved["link"])
    assert len(embeds(page)) == 2
    assert 'data-formrelay-text-delivered="Thanks!"' in page and 'data-formrelay-title="off"' in page


def test_an_unknown_form_is_explained_to_editors_in_their_language_and_invisible_to_visitors(wp):
    _, url = wp.site.page("Unknown form", '<!-- wp:paragraph --><p>Before the form.</p><!-- /wp:paragraph -->\n'
                                          '[formrelay form="no-such-form"]\n'
                                          '<!-- wp:formrelay/form {"form":"no-such-form-either"} /-->')
    french = html.unescape(wp.site.login("editor").get(url, timeout=30).text)  # the editor's locale is fr_FR
    assert f"Le relais {wp.relay.url} ne connaît aucun formulaire nommé « no-such-form »." in french
    assert "« no-such-form-either »" in french
    assert "Seules les personnes qui peuvent modifier ce site voient ce message" in french
    english = html.unescape(wp.site.login("admin").get(url, timeout=30).text)
    assert f"The relay at {wp.relay.url} does not know a form named “no-such-form”." in english
    page = visitor_html(url)
    assert post_text(page) == "Before the form."  # nothing else: no message, no element, not the shortcode
    assert "formrelay-notice" not in page and "no-such-form" not in page and not embeds(page)


def test_a_relay_other_than_the_sites_needs_an_administrators_permission(wp):
    other = f"http://localhost:{wp.relay.port}"
    _, url = wp.site.page("Other relay", f'[formrelay form="join" relay="{other}/"]')
    french = html.unescape(wp.site.login("editor").get(url, timeout=30).text)
    assert f"Le relais {other} ne fait pas partie de ceux que ce site autorise." in french
    assert not embeds(visitor_html(url))
    wp.site.option("formrelay_other_relays", [other])
    try:
        page = visitor_html(url)
        (div,) = embeds(page)
        assert f'data-formrelay-form="{other}/v1/forms/join"' in div
        # One script for the page, from the site's relay: it serves forms posting to any relay.
        assert len(re.findall(r"/static/formrelay\.js", page)) == 1 and f"{wp.relay.url}/static/formrelay.js" in page
    finally:
        wp.site.option("formrelay_other_relays", [])


def login_in_browser(browser, site: Site, user: str) -> None:
    forget_cookies(browser)
    browser.get(f"{site.url}/wp-login.php?redirect_to=%2Fwp-admin%2Fprofile.php")
    wait(browser, lambda d: d.find_elements(By.ID, "user_login"))
    time.sleep(0.3)  # wp-login.php focuses the field after load; typing before that can lose characters
    browser.find_element(By.ID, "user_login").send_keys(user)
    browser.find_element(By.ID, "user_pass").send_keys(PASSWORDS[user])
    browser.find_element(By.ID, "wp-submit").click()
    wait(browser, lambda d: "/wp-admin/" in d.current_url)


def editor_canvas(browser, selector: str) -> list[Any]:
    """Elements in the block editor's canvas, whether or not this WordPress puts it in an iframe."""
    browser.switch_to.default_content()
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    if not found:
        for frame in browser.find_elements(By.CSS_SELECTOR, 'iframe[name="editor-canvas"]'):
            browser.switch_to.frame(frame)
            found = browser.find_elements(By.CSS_SELECTOR, selector)
            texts = [node.text for node in found]
            browser.switch_to.default_content()
            return texts
    return [node.text for node in found]


def test_the_block_editor_previews_the_form_from_the_relay_and_an_editor_publishes_it(wp, browser):
    login_in_browser(browser, wp.site, "editor")
    browser.set_page_load_timeout(60)  # the block editor loads a hundred scripts from `php -S`
    try:
        browser.get(f"{wp.site.url}/wp-admin/post-new.php")
        wait(browser, lambda d: d.execute_script(
            "return !!(window.wp && wp.data && wp.blocks && wp.blocks.getBlockType('formrelay/form')"
            " && wp.data.select('core/editor').getCurrentPostId());"), 60)
        # The editor script's strings come in the editor's language (fr_FR) from the plugin's JSON files.
        assert browser.execute_script("return wp.i18n.__('Form name on the relay', 'formrelay');") == \
            "Nom du formulaire sur le relais"
        assert browser.execute_script("return wp.blocks.getBlockType('formrelay/form').title;") == \
            "Formulaire formrelay"
        browser.execute_script("""
            wp.data.dispatch('core/editor').editPost({title: 'Published by the editor'});
            wp.data.dispatch('core/block-editor').insertBlocks([
                wp.blocks.createBlock('formrelay/form', {form: 'join', submitText: 'Signer'}),
                wp.blocks.createBlock('formrelay/form', {form: 'not-on-the-relay'})]);""")
        console_errors(browser)  # what loading the editor logged is WordPress's
        wait(browser, lambda d: TITLE in editor_canvas(d, ".formrelay-preview-title"), 30)
        assert "Signer" in editor_canvas(browser, ".formrelay-preview-submit")
        assert "Aperçu : les visiteurs reçoivent ce formulaire du relais, dans leur propre langue." in \
            editor_canvas(browser, ".formrelay-preview-note")
        wait(browser, lambda d: any("« not-on-the-relay »" in text
                                    for text in editor_canvas(d, ".formrelay-preview-problem")), 30)
        browser.execute_script("""
            wp.data.dispatch('core/editor').editPost({status: 'publish'});
            wp.data.dispatch('core/editor').savePost();""")
        wait(browser, lambda d: d.execute_script(
            "var e = wp.data.select('core/editor');"
            "return !e.isSavingPost() && e.isCurrentPostPublished() && !e.isEditedPostDirty();"), 30)
        post_id = browser.execute_script("return wp.data.select('core/editor').getCurrentPostId();")
        assert not console_errors(browser, "formrelay", "preview")
    finally:
        browser.set_page_load_timeout(20)  # the session's browser fixture's value
        forget_cookies(browser)
    saved = wp.site.php_json(f"$p = get_post({int(post_id)}); echo json_encode([$p->post_content, $p->post_author,"
                             f" $p->post_status, get_permalink($p)]);")
    content, author, status, link = saved
    assert status == "publish" and int(author) == wp.site.users["editor"]
    assert '<!-- wp:formrelay/form {"form":"join","submitText":"Signer"} /-->' in content
    page = visitor_html(link)
    (div,) = embeds(page)  # the form the relay does not know shows nothing to visitors
    assert 'data-formrelay-text-submit="Signer"' in div


# -- settings --------------------------------------------------------------------------------------------------------

def settings_form(session: requests.Session, site: Site) -> dict[str, str]:
    page = session.get(f"{site.url}/wp-admin/options-general.php", params={"page": "formrelay"}, timeout=30)
    assert page.status_code == 200
    form = page.text.split('action="options.php"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input[^>]*name=["\']([^"\']+)["\'][^>]*value=["\']([^"\']*)["\']', form))
    return {"option_page": fields["option_page"], "action": "update", "_wpnonce": fields["_wpnonce"],
            "_wp_http_referer": html.unescape(fields["_wp_http_referer"])}


def save_settings(session: requests.Session, site: Site, relay_url: str, **more: str) -> str:
    """Post the settings form as the browser does; the settings page WordPress shows afterwards."""
    data = {**settings_form(session, site), "formrelay_relay_url": relay_url, "formrelay_other_relays": "",
            "formrelay_stylesheet": "1", **more}
    answer = session.post(f"{site.url}/wp-admin/options.php", data=data, timeout=30)
    assert answer.status_code == 200, answer.status_code
    return html.unescape(answer.text)


def saved_relay(site: Site) -> str:
    return site.php("echo get_option('formrelay_relay_url');")


SCHEME = "The relay’s address must start with https:// (http:// is accepted only for localhost and 127.0.0.1"


@pytest.mark.parametrize(("typed", "said"), [
    ("ftp://relay.example.org", SCHEME),
    ("javascript:alert(1)", SCHEME),
    ("http://relay.example.org", SCHEME),
    ("relay.example.org", "“relay.example.org” is not a web address."),
    ("https://user:secret@relay.example.org", "must not contain a user name, a password, a query (?)"),
    ("https://relay.example.org/v1/forms/join", "without /v1/forms/… or /static/formrelay.js at the end"),
])
def test_settings_refuse_an_address_that_is_not_a_relays_https_address_with_a_message(wp, typed, said):
    admin = wp.site.login("admin")
    page = save_settings(admin, wp.site, typed)
    assert re.search(r"id=[\"']setting-error-formrelay_relay_url[\"']", page)
    assert said in page
    assert saved_relay(wp.site) == wp.relay.url  # the address saved before is kept


def test_settings_save_a_relay_address_in_one_form(wp):
    admin = wp.site.login("admin")
    try:
        page = save_settings(admin, wp.site, "  HTTPS://Relay.Example.org/campaigns/  ",
                             formrelay_other_relays="https://second.example.org\nftp://nope.example.org")
        assert saved_relay(wp.site) == "https://relay.example.org/campaigns"
        assert wp.site.php("echo implode(',', get_option('formrelay_other_relays'));") == "https://second.example.org"
        assert re.search(r"id=[\"']setting-error-formrelay_other_relays[\"']", page)  # ftp:// named, left out
    finally:
        wp.site.option("formrelay_relay_url", wp.relay.url)
        wp.site.option("formrelay_other_relays", [])


def test_only_an_administrator_with_a_valid_nonce_changes_the_settings(wp):
    editor = wp.site.login("editor")
    refused = editor.get(f"{wp.site.url}/wp-admin/options-general.php", params={"page": "formrelay"}, timeout=30)
    assert refused.status_code == 403
    admin_form = settings_form(wp.site.login("admin"), wp.site)
    forged = editor.post(f"{wp.site.url}/wp-admin/options.php", timeout=30,
                         data={**admin_form, "formrelay_relay_url": "https://attacker.example"})
    assert forged.status_code == 403
    no_nonce = wp.site.login("admin").post(f"{wp.site.url}/wp-admin/options.php", timeout=30, data={
        "option_page": "formrelay", "action": "update", "formrelay_relay_url": "https://attacker.example"})
    assert no_nonce.status_code == 403
    assert saved_relay(wp.site) == wp.relay.url


def test_connection_shows_the_forms_title_or_why_not(wp):
    admin = wp.site.login("admin")
    settings = f"{wp.site.url}/wp-admin/options-general.php?page=formrelay"
    page = admin.get(settings, timeout=30).text
    nonce = re.search(r'name="formrelay_test_nonce" value="([0-9a-f]+)"', page).group(1)
    assert f'allowed_origins = [&quot;{wp.site.url}&quot;]' in page  # what to tell the relay
    known = html.unescape(admin.post(settings, data={"formrelay_test_nonce": nonce, "formrelay_test_form": "join"},
                                     timeout=30).text)
    assert re.search(rf'notice-success"><p>The relay knows this form: “{TITLE}” \(join\), with \d+ fields\.', known)
    unknown = html.unescape(admin.post(settings, data={"formrelay_test_nonce": nonce,
                                                       "formrelay_test_form": "nope"}, timeout=30).text)
    assert f"The relay at {wp.relay.url} does not know a form named “nope”." in unknown
    wp.site.option("formrelay_relay_url", "http://127.0.0.1:9")  # nothing listens on the discard port
    try:
        down = html.unescape(admin.post(settings, data={"formrelay_test_nonce": nonce,
                                                        "formrelay_test_form": "join"}, timeout=30).text)
        assert "The relay at http://127.0.0.1:9 could not be reached:" in down
    finally:
        wp.site.option("formrelay_relay_url", wp.relay.url)
    forged = admin.post(settings, data={"formrelay_test_nonce": "0" * 10, "formrelay_test_form": "join"}, timeout=30)
    assert forged.status_code == 403


# -- the end of the run ------------------------------------------------------------------------------------------------

def test_uninstall_removes_the_settings_and_what_was_remembered(wp):
    try:
        left = wp.site.php_json("""
            require_once ABSPATH . 'wp-admin/includes/plugin.php';
            deactivate_plugins('formrelay/formrelay.php');
            uninstall_plugin('formrelay/formrelay.php');
            global $wpdb;
            echo json_encode([get_option('formrelay_relay_url', 'gone'),
                $wpdb->get_col("SELECT option_name FROM $wpdb->options WHERE option_name LIKE '%formrelay%'")]);""")
        assert left == ["gone", ["formrelay_test_csp_relay"]]  # the test site's own option stays
    finally:
        wp.site.php("require_once ABSPATH . 'wp-admin/includes/plugin.php'; activate_plugin('formrelay/formrelay.php');")
        wp.site.option("formrelay_relay_url", wp.relay.url)


def test_no_php_warning_or_notice_in_the_debug_log(wp):
    """Run last: everything above went through WordPress with WP_DEBUG on."""
    log = wp.site.log_text()
    problems = [line for line in log.splitlines()
                if re.search(r"PHP (Warning|Notice|Fatal error|Parse error|Recoverable)", line)
                or ("PHP Deprecated" in line and "plugins/formrelay" in line)
                or "Doing it wrong" in line or "was called <strong>incorrectly" in line]
    assert not problems, "\n".join(problems[:20])
