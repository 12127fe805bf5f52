#!/usr/bin/env python3
"""The page dae-server serves at GET /, driven in a real (headless) Chromium.

usage: tests/browser/test_page.py PATH/TO/dae-server [--screenshot docs/web-page.png]

Starts the server on a free loopback port with a copy of models/ in a temporary
directory (an activation never writes into the checkout), opens the page and
checks, each printed ok or FAIL: the models list; a denoise of an uploaded
image with sigma 0 against POST /denoise's bytes; the page's noise against
POST /noise's bytes, with PSNR shown and better after denoising; a digit drawn
with the mouse; a small training job whose loss chart fills and which ends
succeeded; an oversized image whose error the page shows. Then the screenshot,
and SIGTERM: the server must exit 0.

Needs python3-selenium, chromium and chromium-driver (Debian's packages). When
one is missing it prints "skipped: ..." and exits 0, unless DAE_REQUIRE_BROWSER=1.
Run from the repository's root.
"""
import argparse
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

REQUIRE = os.environ.get("DAE_REQUIRE_BROWSER") == "1"


def skip(why):
    if REQUIRE:
        print(f"FAIL: {why} (DAE_REQUIRE_BROWSER=1)")
        sys.exit(1)
    print(f"skipped: {why}")
    sys.exit(0)


def import_selenium():
    """Selenium, from this interpreter or from Debian's python3-selenium
    (a python3 of pyenv or a venv does not see Debian's dist-packages)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        debian = "/usr/lib/python3/dist-packages"
        if not os.path.isdir(os.path.join(debian, "selenium")):
            skip("selenium is not installed (apt-get install python3-selenium)")
        sys.path.append(debian)
        try:
            import selenium  # noqa: F401
        except ImportError as e:
            skip(f"selenium does not import ({e})")


def find_browser():
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if chrome is None:
        skip("no chromium (apt-get install chromium)")
    if driver is None:
        skip("no chromedriver (apt-get install chromium-driver)")
    return chrome, driver


def gray_png(width, height, value=128):
    """A valid 8-bit gray PNG of width x height, all pixels value (None:
    random pixels, which do not compress)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + (os.urandom(width) if value is None else bytes([value]) * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


class Server:
    """dae-server on a free loopback port, its logs in files of tmp."""

    def __init__(self, binary, tmp):
        models = os.path.join(tmp, "models")
        os.mkdir(models)
        for name in os.listdir("models"):
            if name.endswith(".safetensors"):
                shutil.copy(os.path.join("models", name), models)
        self.err_path = os.path.join(tmp, "server.err")
        self.out = open(os.path.join(tmp, "server.out"), "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", "0", "--models-dir", models, "--model", "mnist",
             "--data-dir", "tests/fixtures", "--state-dir", os.path.join(tmp, "state"),
             "--max-pixels", "1000000", "--max-body", "2MiB", "--reload-interval", "0"],
            stdout=self.out, stderr=self.err)
        deadline = time.time() + 20
        while time.time() < deadline:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.base = f"http://127.0.0.1:{m.group(1)}"
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("dae-server did not start:\n" + self.log())

    def log(self):
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def post(self, path, body, content_type="image/png"):
        req = urllib.request.Request(self.base + path, data=body, method="POST", headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.read()

    def stop(self):
        """SIGTERM; the exit status (None: it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.out.close()
            self.err.close()


failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(name)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("server", help="the dae-server binary")
    ap.add_argument("--screenshot", help="save a screenshot of a finished denoise to this PNG")
    args = ap.parse_args()
    if not os.path.isfile("models/mnist.safetensors"):
        sys.exit("run from the repository's root (models/mnist.safetensors not found)")

    import_selenium()
    chrome, driver_path = find_browser()
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = tempfile.mkdtemp(prefix="dae-browser-")
    server = Server(os.path.abspath(args.server), tmp)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1000", "--force-device-scale-factor=1", "--hide-scrollbars",
              "--force-color-profile=srgb"):
        opts.add_argument(a)
    try:
        browser = webdriver.Chrome(service=Service(driver_path), options=opts)
    except WebDriverException as e:
        rc = server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        skip(f"chromium does not start ({str(e).strip().splitlines()[0]}; server exit {rc})")

    def js(script, *a):
        return browser.execute_script(script, *a)

    def wait(cond, timeout=30, what="condition"):
        try:
            return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def el(id_):
        return browser.find_element(By.ID, id_)

    def into_view(id_):
        """Element id_ scrolled to the middle of the window (at once: the page scrolls smoothly)."""
        e = el(id_)
        js("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", e)
        return e

    def click(id_):
        into_view(id_).click()

    def set_sigma_seed(sigma, seed):
        js("const s = document.getElementById('sigma'); s.value = arguments[0];"
           "s.dispatchEvent(new Event('input', {bubbles: true}));", str(sigma))
        into_view("seed").clear()
        el("seed").send_keys(str(seed))

    def run_and_wait():
        """Clicks Denoise; waits for the run to end; its status ('done' or 'error')."""
        before = js("return window.daeRuns")
        click("run")
        wait(lambda: js("return window.daeRuns") > before, 60, "the denoise run to end")
        return el("run-status").get_attribute("data-state")

    def last_bytes(key):
        return bytes(js(f"return window.daeLast && window.daeLast.{key} ? Array.from(window.daeLast.{key}) : null") or [])

    def upload(path):
        el("file").send_keys(os.path.abspath(path))
        wait(lambda: os.path.basename(path) in el("source-name").text, 10, "the file to be taken")

    def step(name, fn):
        try:
            fn()
        except AssertionError as e:
            check(name, False, str(e))
        except WebDriverException as e:
            check(name, False, "webdriver: " + str(e).strip().splitlines()[0])
        except Exception as e:  # an HTTP error of the server, a broken page: this check fails, the next ones run
            check(name, False, f"{type(e).__name__}: {e}")

    try:
        noisy_img = "samples/digit-noisy.png" if os.path.isfile("samples/digit-noisy.png") else "tests/fixtures/images/gray8.png"
        clean_img = "samples/digit.png" if os.path.isfile("samples/digit.png") else "tests/fixtures/images/gray8.png"

        # 1. The page, its title and the models list.
        def page_loads():
            browser.get(server.base + "/")
            wait(lambda: js("return document.body.dataset.ready === '1'"), 20, "the page to load its lists")
            names = [r.get_attribute("data-model") for r in browser.find_elements(By.CSS_SELECTOR, "#models-list tr")]
            options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#model option")]
            check("1 page loads: title", "dae" in browser.title, repr(browser.title))
            check("1 page loads: models list shows mnist and fashion-mnist",
                  "mnist" in names and "fashion-mnist" in names and "mnist" in options, f"rows {names}")
            check("1 page loads: no error shown", not el("error").is_displayed(), el("error").text)
            icon = urllib.request.urlopen(server.base + "/ui/favicon.svg", timeout=10)
            check("1 page loads: /ui/favicon.svg is served", icon.headers["Content-Type"] == "image/svg+xml")
        step("1 page loads", page_loads)

        # 2. An upload denoised as given: the page shows POST /denoise's bytes.
        def denoise_sigma0():
            js("document.getElementById('model').value = 'mnist'")
            upload(noisy_img)
            set_sigma_seed(0, 1)
            state = run_and_wait()
            got = last_bytes("denoisedBytes")
            with open(noisy_img, "rb") as f:
                want = server.post("/denoise?model=mnist", f.read())
            shown = js("const i = document.getElementById('img-denoised'); return i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')")
            check("2 sigma 0: denoised bytes equal POST /denoise", state == "done" and got == want and len(got) > 0,
                  f"{os.path.basename(noisy_img)}, state {state}, {len(got)} bytes shown, {len(want)} from POST")
            check("2 sigma 0: the image is shown, with X-Request-Id and X-Model",
                  shown and re.fullmatch(r"[0-9a-f]{32}", el("request-id").text) is not None and el("x-model").text == "mnist"
                  and el("x-model-version").text.startswith("sha256:"),
                  f"request id {el('request-id').text!r}, model {el('x-model').text!r} {el('x-model-version').text!r}")
        step("2 sigma 0", denoise_sigma0)

        # 3. The page's noise is POST /noise's; PSNR shown, better denoised.
        def denoise_sigma05():
            upload(clean_img)
            set_sigma_seed(0.5, 7)
            state = run_and_wait()
            got = last_bytes("noisyBytes")
            with open(clean_img, "rb") as f:
                want = server.post("/noise?type=gaussian&sigma=0.5&seed=7", f.read())
            check("3 sigma 0.5 seed 7: noisy bytes equal POST /noise", state == "done" and got == want,
                  f"{os.path.basename(clean_img)}, state {state}, {len(got)} bytes shown, {len(want)} from POST")
            pn, pd = el("psnr-noisy").text, el("psnr-denoised").text
            nums = [float(m.group(1)) if m else None for m in (re.match(r"(-?[\d.]+) dB", t) for t in (pn, pd))]
            check("3 sigma 0.5 seed 7: PSNR shown, denoised > noisy",
                  None not in nums and nums[1] > nums[0], f"noisy {pn}, denoised {pd}")
        step("3 sigma 0.5", denoise_sigma05)

        # 4. A digit drawn with the mouse is denoised.
        def draw_digit():
            canvas = into_view("canvas")
            size = canvas.size["width"]
            u = size / 10.0  # offsets are from the canvas's centre
            chain = ActionChains(browser)
            chain.move_to_element_with_offset(canvas, int(-2.5 * u), int(-3 * u)).click_and_hold()
            for x, y in ((0, -3.2), (2.5, -3), (1.5, -1), (0.5, 1), (-0.3, 3.5)):  # a 7
                chain.move_to_element_with_offset(canvas, int(x * u), int(y * u))
            chain.release().perform()
            lit = js("const c = document.getElementById('canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                     "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n;")
            state = run_and_wait()
            got = last_bytes("denoisedBytes")
            check("4 drawn digit: strokes on the canvas and a denoised result",
                  lit > 1000 and state == "done" and got[:8] == b"\x89PNG\r\n\x1a\n" and "drawing" in el("source-name").text,
                  f"{lit} lit canvas pixels, state {state}, {len(got)} bytes, PSNR noisy {el('psnr-noisy').text}, denoised {el('psnr-denoised').text}")
        step("4 drawn digit", draw_digit)

        # 5. A small training job: the loss chart fills, the job succeeds.
        def training():
            js("document.getElementById('train-dataset').value = 'mnist-mini'")
            for id_, v in (("train-epochs", "1"), ("train-limit", "256"), ("train-name", f"browser-{os.getpid()}")):
                into_view(id_).clear()
                el(id_).send_keys(v)
            if not el("train-gate").is_selected():
                click("train-gate")
            click("train-start")
            wait(lambda: el("train-state").get_attribute("data-state") in ("succeeded", "failed", "cancelled")
                 or el("error").is_displayed(), 120, "the job to end")
            state = el("train-state").get_attribute("data-state")
            points = int(el("loss-chart").get_attribute("data-points"))
            circles = len(browser.find_elements(By.CSS_SELECTOR, "#loss-chart circle.pt"))
            check("5 training: the job reaches succeeded", state == "succeeded",
                  f"state {state} {el('train-detail').text}" + (f", error {el('error').text}" if el("error").is_displayed() else ""))
            check("5 training: the loss chart has points", points >= 1 and circles == points, f"{points} points, {circles} circles")
            wait(lambda: f"browser-{os.getpid()}" in [r.get_attribute("data-model") for r in
                                                     browser.find_elements(By.CSS_SELECTOR, "#models-list tr")],
                 10, "the new model in the list")
            promotion = el("train-promotion").text
            check("5 training: the gate's decision is shown", re.search(r"Promotion: (kept|promoted)", promotion) is not None, promotion)
            check("5 training: the new model is listed, Activate enabled unless promoted",
                  el("train-activate").is_enabled() != ("promoted" in promotion))
        step("5 training", training)

        # 6. An image over --max-pixels: the server's error code is shown.
        def oversized():
            path = os.path.join(tmp, "big-1200x1200.png")
            with open(path, "wb") as f:
                f.write(gray_png(1200, 1200))
            upload(path)
            set_sigma_seed(0.5, 1)
            state = run_and_wait()
            wait(lambda: el("error").is_displayed(), 10, "the error area")
            text = el("error").text
            check("6 oversized image: too_many_pixels shown in the error area",
                  state == "error" and "too_many_pixels" in text and el("error").get_attribute("role") == "alert",
                  text.replace("\n", " "))
        step("6 oversized", oversized)

        # 6. A file over --max-body: refused from its Content-Length before
        # the server reads it; the page shows the server's error.
        def over_max_body():
            click("error-close")
            path = os.path.join(tmp, "noise-1600x1600.png")
            with open(path, "wb") as f:
                f.write(gray_png(1600, 1600, None))
            upload(path)
            state = run_and_wait()
            wait(lambda: el("error").is_displayed(), 10, "the error area")
            text = el("error").text
            check("6 a file over --max-body: body_too_large shown in the error area",
                  state == "error" and "body_too_large" in text, text.replace("\n", " "))
        step("6 over --max-body", over_max_body)

        # 7. A screenshot of a finished denoise, the three images visible.
        def screenshot():
            click("error-close")
            js("document.getElementById('model').value = 'mnist'")
            upload(clean_img)
            set_sigma_seed(0.5, 1)
            state = run_and_wait()
            js("window.scrollTo(0, 0)")
            loaded = js("return ['original', 'noisy', 'denoised'].every(s => { const i = document.getElementById('img-' + s);"
                        "return i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().bottom <= window.innerHeight; })")
            ok = state == "done" and loaded
            if args.screenshot:
                time.sleep(0.3)
                os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
                ok = browser.save_screenshot(args.screenshot) and ok
            check("7 screenshot: three images visible" + (f", saved to {args.screenshot}" if args.screenshot else ""),
                  ok, f"state {state}, PSNR {el('psnr-noisy').text} -> {el('psnr-denoised').text}")
        step("7 screenshot", screenshot)

        console = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"
                   and "too_many_pixels" not in e.get("message", "") and " 413 " not in e.get("message", "")]
        check("the browser console has no errors", not console, "; ".join(e["message"] for e in console[:3]))
    finally:
        browser.quit()
        rc = server.stop()
    check("the server exits 0 on SIGTERM", rc == 0, f"exit {rc}")
    if failures:
        print("server log:\n" + server.log()[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"FAIL: {len(failures)} checks failed" if failures else "ok: every check passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
