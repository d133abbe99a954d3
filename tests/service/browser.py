"""Headless Chromium for UI tests: Debian's chromium and chromedriver, driven by selenium.

The browser and its driver come from the distribution's packages, installed by
``scripts/install_system_deps.sh`` (``make test`` runs it). Nothing is downloaded at
run time: the driver's path is given, so Selenium Manager is never asked for one.
A missing browser fails the test with the command that installs it; it never skips.
Every page a test opens can be saved as a screenshot, and one is saved on failure.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

BROWSER_CANDIDATES = ("chromium", "chromium-browser")
DRIVER_CANDIDATES = ("chromedriver",)


def _find(names) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


class Browser:
    def __init__(self, driver, out_dir: Path):
        self.driver = driver
        self.out_dir = out_dir

    def open(self, url: str, name: str):
        self.driver.get(url)
        return self.driver.find_element("tag name", "body")

    def open_until(self, url: str, text: str, timeout_s: float = 90, tries: int = 2):
        """Open ``url`` until ``text`` shows (a busy webserver can leave a first load half-done)."""
        for attempt in range(tries):
            body = self.open(url, text)
            try:
                self.wait_for_text(text, timeout_s)
                return body
            except AssertionError:
                if attempt == tries - 1:
                    raise

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def wait_for_text(self, text: str, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while text not in self.text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear on {self.driver.current_url} within {timeout_s:.0f}s")
            time.sleep(0.3)

    def wait_for_css(self, selector: str, timeout_s: float = 30):
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.driver.find_elements("css selector", selector)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing matches {selector!r} on {self.driver.current_url}")
            time.sleep(0.3)

    def click_text(self, text: str, timeout_s: float = 30):
        deadline = time.monotonic() + timeout_s
        xpath = f"//*[normalize-space(text())='{text}']"
        while True:
            found = self.driver.find_elements("xpath", xpath)
            if found:
                found[0].click()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no element reads {text!r} on {self.driver.current_url}")
            time.sleep(0.3)

    def image_size(self, element, timeout_s: float = 15) -> tuple[int, int]:
        """(naturalWidth, naturalHeight) once the image has loaded; (0, 0) if it never decodes."""
        deadline = time.monotonic() + timeout_s
        while True:
            complete, width, height = self.driver.execute_script(
                "const i = arguments[0]; return [i.complete, i.naturalWidth, i.naturalHeight];", element)
            if (complete and width) or time.monotonic() > deadline:
                return int(width), int(height)
            time.sleep(0.2)

    def screenshot(self, name: str) -> Path:
        path = self.out_dir / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@contextmanager
def chromium(out_dir: Path, width: int = 1600, height: int = 1000, download_dir: Path | None = None):
    """A headless Chromium session; screenshots go to ``out_dir`` (``failure.png`` on an error).
    With ``download_dir``, a page's downloads are saved there without asking."""
    browser_path, driver_path = _find(BROWSER_CANDIDATES), _find(DRIVER_CANDIDATES)
    if not browser_path or not driver_path:
        pytest.fail("Chromium or chromedriver is missing: run `bash scripts/install_system_deps.sh` "
                    "(make test does) or apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach for the network
    options = Options()
    options.binary_location = browser_path
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    if download_dir is not None:
        options.add_experimental_option("prefs", {
            "download.default_directory": str(download_dir), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    if download_dir is not None:  # headless Chromium also needs to be told through DevTools
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    browser = Browser(driver, Path(out_dir))
    try:
        yield browser
    except BaseException:
        try:
            browser.screenshot("failure")
        except Exception:
            pass
        raise
    finally:
        driver.quit()
