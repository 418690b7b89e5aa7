"""A throwaway WordPress for the plugin's tests: its own MariaDB, Debian's WordPress, PHP's built-in server.

Everything lives under one temporary directory and listens on 127.0.0.1 (the database on a Unix socket only);
WordPress is told to make no request to any other host, and its debug log is kept for the tests to read.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import _need, free_port
from tests.servers import ROOT, stop

WORDPRESS = Path(os.environ.get("FORMRELAY_WORDPRESS", "/usr/share/wordpress"))
THEME = "twentytwentythree"
PLUGIN_SOURCE = ROOT / "integrations" / "wordpress" / "formrelay"
BUILD_SCRIPT = ROOT / "integrations" / "wordpress" / "build.py"
PACKAGES = "php-cli, php-mysql, mariadb-server, wordpress and wordpress-theme-twentytwentythree"
PASSWORDS = {"admin": "admin-" + secrets.token_hex(8), "editor": "editor-" + secrets.token_hex(8)}


def binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin")
                                            if Path(f"{d}/{name}").exists()), None)
        if found:
            return found
    return None


def need_wordpress() -> dict[str, str]:
    """The programs the test site needs, or a skip (a failure in CI) naming the Debian packages."""
    found = {"php": binary("php"), "mariadbd": binary("mariadbd", "mysqld"),
             "install_db": binary("mariadb-install-db", "mysql_install_db")}
    missing = [name for name, path in found.items() if path is None]
    if not (WORDPRESS / "wp-settings.php").exists():
        missing.append("wordpress")
    if not (WORDPRESS / "wp-content" / "themes" / THEME / "theme.json").exists():
        missing.append(f"wordpress-theme-{THEME}")
    if missing:
        _need(f"{PACKAGES} (missing: {', '.join(missing)})")
    if subprocess.run([found["php"], "-r", "exit(extension_loaded('mysqli') ? 0 : 1);"]).returncode != 0:  # type: ignore[list-item]
        _need(f"{PACKAGES} (PHP has no mysqli: php-mysql)")
    return found  # type: ignore[return-value]


@dataclass
class Site:
    """A running WordPress: its address, its files and a way to run PHP inside it."""

    url: str
    root: Path
    debug_log: Path
    server_log: Path
    php_binary: str
    users: dict[str, int] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return self.url

    def php(self, code: str, timeout: float = 60) -> str:
        """Run PHP with WordPress loaded (what `wp eval` does); its output, or an error with stderr."""
        return run_php(self, code, timeout=timeout)

    def php_json(self, code: str) -> Any:
        return json.loads(self.php(code))

    def option(self, name: str, value: Any) -> None:
        self.php(f"update_option({php_value(name)}, {php_value(value)});")

    def page(self, title: str, content: str, kind: str = "page", author: int | None = None) -> tuple[int, str]:
        """Publish a page or post (as the administrator unless told); its id and address."""
        post = {"post_title": title, "post_content": content, "post_status": "publish", "post_type": kind,
                "post_author": author or self.users["admin"]}
        return tuple(self.php_json(f"$id = wp_insert_post(wp_slash({php_value(post)}), true); "
                                   "if (is_wp_error($id)) { fwrite(STDERR, $id->get_error_message()); exit(1); } "
                                   "echo json_encode([$id, get_permalink($id)]);"))  # type: ignore[return-value]

    def login(self, user: str) -> requests.Session:
        """A requests session logged in through wp-login.php, as a person would be."""
        session = requests.Session()
        session.get(f"{self.url}/wp-login.php", timeout=30)  # sets WordPress's test cookie
        answer = session.post(f"{self.url}/wp-login.php", timeout=30, allow_redirects=False, data={
            "log": user, "pwd": PASSWORDS[user], "wp-submit": "Log In", "testcookie": "1",
            "redirect_to": f"{self.url}/wp-admin/"})
        assert answer.status_code == 302, f"login as {user} failed: {answer.status_code}"
        assert any(c.name.startswith("wordpress_logged_in_") for c in session.cookies)
        return session

    def rest_nonce(self, session: requests.Session) -> str:
        answer = session.get(f"{self.url}/wp-admin/admin-ajax.php", params={"action": "rest-nonce"}, timeout=30)
        assert answer.status_code == 200 and re.fullmatch(r"[0-9a-f]{10}", answer.text), answer.text[:200]
        return answer.text

    def log_text(self) -> str:
        return self.debug_log.read_text(errors="replace") if self.debug_log.exists() else ""


def php_value(value: Any) -> str:
    """A Python value as a PHP literal (through JSON, so strings are escaped safely)."""
    return f"json_decode({json.dumps(json.dumps(value))}, true)"


def run_php(site: Site, code: str, timeout: float = 60) -> str:
    script = site.root.parent / f"run-{secrets.token_hex(4)}.php"
    host = site.url.removeprefix("http://")
    script.write_text(f"<?php\n$_SERVER['HTTP_HOST'] = '{host}'; $_SERVER['SERVER_NAME'] = '127.0.0.1';\n"
                      f"$_SERVER['REQUEST_URI'] = '/'; $_SERVER['REQUEST_METHOD'] = 'GET';\n"
                      f"require '{site.root}/wp-load.php';\n{code}\n")
    try:
        done = subprocess.run([site.php_binary, str(script)], capture_output=True, text=True, timeout=timeout,
                              cwd=site.root)
    finally:
        script.unlink()
    if done.returncode != 0:
        raise AssertionError(f"PHP failed ({done.returncode}): {done.stderr[-3000:]}{done.stdout[-3000:]}")
    return done.stdout


def build_plugin(out: Path) -> Path:
    """The installable zip, made by the script a maintainer runs."""
    done = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (zip_path,) = out.glob("formrelay-*.zip")
    return zip_path


@contextlib.contextmanager
def mariadb(tmp: Path, programs: dict[str, str]) -> Iterator[Path]:
    """A MariaDB server of our own, on a Unix socket in tmp (no TCP port at all)."""
    data, sock, log = tmp / "db", tmp / "mysql.sock", tmp / "mariadb.log"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    done = subprocess.run([programs["install_db"], "--no-defaults", f"--datadir={data}", "--skip-test-db",
                           "--auth-root-authentication-method=normal", *as_root],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with log.open("wb") as out:
        proc = subprocess.Popen([programs["mariadbd"], "--no-defaults", f"--datadir={data}", f"--socket={sock}",
                                 "--skip-networking", f"--pid-file={tmp / 'mariadb.pid'}", "--skip-log-bin",
                                 "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
                                 "--max-connections=50", *as_root],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
                break
            assert proc.poll() is None, f"mariadbd exited: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "mariadbd did not start within 60 s"
            time.sleep(0.1)
        yield sock
    finally:
        stop(proc, timeout=30)


def wp_config(url: str, sock: Path, debug_log: Path) -> str:
    keys = "\n".join(f"define('{name}', '{secrets.token_hex(32)}');" for name in (
        "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT", "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT", "NONCE_SALT"))
    return f"""<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', 'localhost:{sock}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{keys}
$table_prefix = 'wp_';
define('WP_HOME', '{url}');
define('WP_SITEURL', '{url}');
define('WP_DEBUG', true);
define('WP_DEBUG_LOG', '{debug_log}');
define('WP_DEBUG_DISPLAY', false);
define('SCRIPT_DEBUG', false);
// A strict site: nobody may post unfiltered HTML (no <script> from editors).
define('DISALLOW_UNFILTERED_HTML', true);
// No request to any host but this one, and nothing in the background.
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_AUTO_UPDATE_CORE', false);
define('WP_ENVIRONMENT_TYPE', 'local');
if (!defined('ABSPATH')) {{ define('ABSPATH', __DIR__ . '/'); }}
require_once ABSPATH . 'wp-settings.php';
"""


ROUTER = """<?php
// PHP's built-in server: files as they are, everything else to WordPress (pretty permalinks would work too).
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path !== '/' && file_exists(__DIR__ . $path)) {
    return false;
}
require __DIR__ . '/index.php';
"""

# The test site's own must-use plugin: no emoji script (it would load images from s.w.org), no avatars from
# gravatar.com, no update checks (WP_HTTP_BLOCK_EXTERNAL refuses them, and core logs a warning for each), and a
# strict Content-Security-Policy for visitors that names only the site and the relay. Core's one inline script on
# the front end (the block theme's skip link) is left out, so that any CSP violation on a page is the plugin's.
SITE_PLUGIN = """<?php
remove_action('wp_head', 'print_emoji_detection_script', 7);
remove_action('wp_footer', 'the_block_template_skip_link');
remove_action('admin_print_scripts', 'print_emoji_detection_script');
add_filter('pre_option_show_avatars', '__return_zero');
foreach (['_maybe_update_core', '_maybe_update_plugins', '_maybe_update_themes'] as $check) {
    remove_action('admin_init', $check);
}
remove_action('init', 'wp_schedule_update_checks');
foreach (['update_core', 'update_plugins', 'update_themes'] as $transient) {
    add_filter("pre_site_transient_$transient", function () {
        return (object) ['last_checked' => time(), 'version_checked' => $GLOBALS['wp_version'], 'updates' => [],
                         'translations' => [], 'response' => [], 'checked' => []];
    });
}
add_action('send_headers', function () {
    $relay = get_option('formrelay_test_csp_relay');
    if ($relay && !is_user_logged_in()) {
        header("Content-Security-Policy: default-src 'self'; script-src 'self' $relay; connect-src $relay; "
             . "style-src 'self' 'unsafe-inline' $relay; img-src 'self' data:; font-src 'self' data:; "
             . "form-action 'self' $relay; base-uri 'none'");
    }
});
"""


@contextlib.contextmanager
def wordpress(tmp: Path) -> Iterator[Site]:
    """Install WordPress in tmp with the plugin from its zip, and serve it on a free 127.0.0.1 port."""
    programs = need_wordpress()
    started = time.monotonic()
    root = tmp / "wordpress"
    shutil.copytree(WORDPRESS, root, symlinks=True, ignore=shutil.ignore_patterns("wp-config.php", "wp-content"))
    content = root / "wp-content"
    (content / "plugins").mkdir(parents=True)
    (content / "mu-plugins").mkdir()
    (content / "themes").mkdir()
    (content / "uploads").mkdir()
    shutil.copytree(WORDPRESS / "wp-content" / "themes" / THEME, content / "themes" / THEME, symlinks=True)
    with zipfile.ZipFile(build_plugin(tmp / "dist")) as plugin_zip:
        plugin_zip.extractall(content / "plugins")
    (content / "mu-plugins" / "formrelay-test-site.php").write_text(SITE_PLUGIN)
    (root / "router.php").write_text(ROUTER)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    site = Site(url, root, tmp / "debug.log", tmp / "php-server.log", programs["php"])
    with mariadb(tmp, programs) as sock:
        (root / "wp-config.php").write_text(wp_config(url, sock, site.debug_log))
        done = subprocess.run([programs["php"], "-r", f"$db = new mysqli('localhost', 'root', '', '', 0, '{sock}'); "
                               "$db->query('CREATE DATABASE wordpress CHARACTER SET utf8mb4');"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        install(site)
        with site.server_log.open("wb") as out:
            env = {**os.environ, "PHP_CLI_SERVER_WORKERS": "4"}
            proc = subprocess.Popen([programs["php"], "-S", f"127.0.0.1:{port}",
                                     "-t", str(root), str(root / "router.php")], cwd=root, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.ConnectionError):
                    requests.get(f"{url}/wp-login.php", timeout=10)
                    break
                assert proc.poll() is None, site.server_log.read_text(errors="replace")[-2000:]
                assert time.monotonic() < deadline, "php -S did not start"
                time.sleep(0.1)
            print(f"\nWordPress installed and serving at {url} in {time.monotonic() - started:.1f} s")
            yield site
        finally:
            stop(proc, timeout=10)


def install(site: Site) -> None:
    """wp_install() without a browser, the theme, two users, and the plugin activated from its zip."""
    done = subprocess.run([site.php_binary, "-r", f"""
        define('WP_INSTALLING', true);
        $_SERVER['HTTP_HOST'] = '{site.url.removeprefix("http://")}';
        require '{site.root}/wp-load.php';
        require_once ABSPATH . 'wp-admin/includes/upgrade.php';
        wp_install('formrelay test site', 'admin', 'admin@example.org', false, '', '{PASSWORDS["admin"]}');
    """], capture_output=True, text=True, timeout=120, cwd=site.root)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    users = site.php_json(f"""
        switch_theme('{THEME}');
        update_option('show_avatars', 0);
        $editor = wp_insert_user(['user_login' => 'editor', 'user_pass' => '{PASSWORDS["editor"]}',
            'user_email' => 'editor@example.org', 'role' => 'editor', 'locale' => 'fr_FR']);
        if (is_wp_error($editor)) {{ fwrite(STDERR, $editor->get_error_message()); exit(1); }}
        require_once ABSPATH . 'wp-admin/includes/plugin.php';
        $active = activate_plugin('formrelay/formrelay.php');
        if (is_wp_error($active)) {{ fwrite(STDERR, $active->get_error_message()); exit(1); }}
        echo json_encode(['admin' => 1, 'editor' => $editor]);
    """)
    site.users.update(users)
