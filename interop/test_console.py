"""The operator console (issue 15) in a real headless Chromium, driven by Selenium, against a real `dynreg serve`.

Skipped when Chromium or chromedriver is missing, unless CI is set (then they must be there). Screenshots of every
page go to the directory the test prints (DYNREG_CONSOLE_SCREENSHOTS, or a temporary one).
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from test_interop import dynreg_binary, new_device_name, server  # noqa: F401 (server: the suite's running server)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover
    HAVE_SELENIUM = False


def _need_browser():
    missing = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
                                     ("selenium", HAVE_SELENIUM)) if not ok]
    if missing:
        message = f"console browser tests need {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: .ci/run installs them)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def shots():
    directory = Path(os.environ.get("DYNREG_CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="dynreg-console-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {directory}")
    return directory


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def shoot(browser, shots: Path, name: str) -> None:
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, max(900, min(height + 40, 3000)))
    browser.save_screenshot(str(shots / f"{name}.png"))
    browser.set_window_size(1280, 900)


def sign_in(browser, server, token: str) -> None:
    browser.get(url(server, "/console/"))
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "sign-in").click()


def wait_text(browser, text: str) -> None:
    """A click that submits a form returns before the next page is there: wait for what it must show."""
    WebDriverWait(browser, 15).until(lambda driver: text in driver.page_source)


def raw_request(server, method: str, path: str, body: str = "", cookie: str = "") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request(method, path, body=body.encode(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_console_end_to_end(server, browser, shots):
    # A wrong token is refused and leaves no session.
    sign_in(browser, server, "not-the-admin-token")
    wait_text(browser, "Wrong admin token")
    assert browser.get_cookie("dynreg_console") is None
    shoot(browser, shots, "sign-in-refused")

    sign_in(browser, server, server.admin_token)
    wait_text(browser, "<h1>Overview</h1>")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    cookie = browser.get_cookie("dynreg_console")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # Create a product through the form.
    browser.get(url(server, "/console/products"))
    name = "console-" + new_device_name()
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "create-product").click()
    wait_text(browser, f"Product {name} created.")
    product_id = browser.find_element(By.CSS_SELECTOR, "h1 code").text
    assert len(product_id) == 10
    assert "product-secret" not in browser.page_source  # shown only on demand
    browser.find_element(By.ID, "show-secret").click()
    secret = browser.find_element(By.ID, "product-secret").text
    assert len(secret) == 24
    shoot(browser, shots, "product")

    # Edit the rate limit, the burst and the new-device brake in the settings form: refused input comes back with
    # the message and the values typed; good input sticks (in the page after a reload, and in the admin API).
    def fill(field_id: str, value: str) -> None:
        field = browser.find_element(By.ID, field_id)
        field.clear()
        field.send_keys(value)

    fill("ratePerSecond", "2.5")
    fill("rateBurst", "")
    fill("newDevicesPerHour", "120")
    browser.find_element(By.ID, "save-product").click()
    wait_text(browser, "Give both the registration rate and the burst")
    assert browser.find_element(By.CSS_SELECTOR, "p.error").text.startswith("Give both")
    assert browser.find_element(By.ID, "ratePerSecond").get_attribute("value") == "2.5"
    assert browser.find_element(By.ID, "newDevicesPerHour").get_attribute("value") == "120"
    shoot(browser, shots, "product-refused")
    assert server.admin("GET", f"/products/{product_id}").json["newDevicesPerHour"] is None
    fill("rateBurst", "40")
    fill("topicRules", "subscribe fleet/+/down")
    browser.find_element(By.ID, "save-product").click()
    wait_text(browser, "Settings saved.")
    browser.get(url(server, f"/console/products/{product_id}"))
    assert browser.find_element(By.ID, "ratePerSecond").get_attribute("value") == "2.5"
    assert browser.find_element(By.ID, "rateBurst").get_attribute("value") == "40"
    assert browser.find_element(By.ID, "newDevicesPerHour").get_attribute("value") == "120"
    assert browser.find_element(By.ID, "topicRules").get_attribute("value") == "subscribe fleet/+/down"
    saved = server.admin("GET", f"/products/{product_id}").json
    assert saved["registrationRate"] == {"perSecond": 2.5, "burst": 40}
    assert saved["newDevicesPerHour"] == 120
    assert saved["topicRules"]["rules"] == [{"topic": "fleet/+/down", "access": "subscribe"}]
    shoot(browser, shots, "product-settings")
    # The brake must not stop the next step's registration: lift it again.
    fill("newDevicesPerHour", "")
    browser.find_element(By.ID, "save-product").click()
    wait_text(browser, "Settings saved.")
    assert server.admin("GET", f"/products/{product_id}").json["newDevicesPerHour"] is None

    # Register a device with the CLI and find it by searching its prefix.
    device = "dev-console-" + new_device_name()[4:]
    registered = subprocess.run(
        [str(dynreg_binary()), "register", "--url", url(server, ""), "--product-id", product_id,
         "--device-name", device, "--product-secret", secret],
        capture_output=True, text=True, timeout=60)
    assert registered.returncode == 0, registered.stderr
    browser.get(url(server, f"/console/products/{product_id}/devices"))
    browser.find_element(By.ID, "prefix").send_keys(device[:14])
    browser.find_element(By.ID, "search").click()
    WebDriverWait(browser, 15).until(lambda driver: "prefix=" in driver.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == [device]
    assert "registered" in rows[0].text
    shoot(browser, shots, "devices")

    # Reset it (with confirmation) and see the reset in the events.
    rows[0].find_element(By.TAG_NAME, "a").click()
    browser.find_element(By.ID, "reset").click()
    wait_text(browser, "Are you sure?")
    shoot(browser, shots, "confirm")
    browser.find_element(By.ID, "confirm").click()
    wait_text(browser, "reset done")
    assert browser.find_element(By.ID, "device-status").text == "created"
    shoot(browser, shots, "device")
    browser.get(url(server, f"/console/events?product={product_id}"))
    outcomes = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
    assert any(device in row and "Admin.DeviceReset" in row for row in outcomes), outcomes
    assert any(device in row and "Success" in row for row in outcomes), outcomes
    shoot(browser, shots, "events")

    browser.get(url(server, "/console/"))
    shoot(browser, shots, "overview")
    browser.get(url(server, "/console/products"))
    shoot(browser, shots, "products")

    # A state-changing request with the session but without the CSRF token is refused, and changes nothing.
    session = f"dynreg_console={browser.get_cookie('dynreg_console')['value']}"
    status, _ = raw_request(server, "POST", f"/console/products/{product_id}/delete", "confirm=yes", session)
    assert status == 403
    assert server.admin("GET", f"/products/{product_id}").status == 200

    # Sign out: the old cookie no longer opens a page.
    browser.find_element(By.ID, "sign-out").click()
    wait_text(browser, "<h1>Sign in</h1>")
    assert browser.find_element(By.ID, "token")
    status, _ = raw_request(server, "GET", "/console/products", cookie=session)
    assert status == 303
    status, _ = raw_request(server, "POST", "/console/sign-out", "csrf=x", session)
    assert status == 403

    # A sign-in form without its CSRF cookie (as a form posted from another site would arrive) is refused, even
    # with the right token, and starts no session; the page it answers with signs in again.
    browser.get(url(server, "/console/sign-in"))
    assert browser.get_cookie("dynreg_console_signin")["httpOnly"]
    browser.delete_cookie("dynreg_console_signin")
    browser.find_element(By.ID, "token").send_keys(server.admin_token)
    browser.find_element(By.ID, "sign-in").click()
    wait_text(browser, "did not come from this console")
    assert browser.get_cookie("dynreg_console") is None
    shoot(browser, shots, "sign-in-no-csrf")
    browser.find_element(By.ID, "token").send_keys(server.admin_token)
    browser.find_element(By.ID, "sign-in").click()
    wait_text(browser, "<h1>Overview</h1>")
    assert browser.get_cookie("dynreg_console")
