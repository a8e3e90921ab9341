"""Screenshot of ``jaxdissect serve``'s paint page in headless Chromium (docs/app_paint.png).

    python scripts/screenshot_app.py RESULTS_DIR docs/app_paint.png [--concept tree]

RESULTS_DIR must hold a generator dissection (e.g. ``jaxdissect dissect --model
world-generator --num-images 64 --out RESULTS_DIR/generator``). Brushes the left half
of the first generated image, turns the concept's 20 best units on, and saves the
page as a PNG (needs chromium and chromium-driver, as the browser test).
"""

from __future__ import annotations

import argparse
import shutil
import threading

from werkzeug.serving import make_server

from jaxdissect.app import create_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--concept", default="tree", help="concept painted (default: %(default)s)")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    app = create_app(args.results)
    gen = next(d.key for d in app.config["RESULTS"].dissections.values()
               if d.kind == "generator")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=980,780",
              "--hide-scrollbars"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        d.get(f"http://127.0.0.1:{server.server_port}/paint/{gen}")
        body = d.find_element(By.TAG_NAME, "body")
        WebDriverWait(d, 300).until(lambda _: body.get_attribute("data-ready"))
        Select(d.find_element(By.ID, "concept")).select_by_value(args.concept)
        canvas = d.find_element(By.ID, "canvas")
        chain = ActionChains(d).move_to_element_with_offset(canvas, -90, -100).click_and_hold()
        for dy in range(-100, 101, 20):
            chain = chain.move_to_element_with_offset(canvas, -90 + (dy % 40), dy)
        chain.release().perform()
        WebDriverWait(d, 300).until(lambda _: body.get_attribute("data-painted"))
        d.find_element(By.ID, "paint").click()        # again, compiled: the time shown
        WebDriverWait(d, 60).until(lambda _: body.get_attribute("data-painted") == "2")
        d.save_screenshot(args.out)
    finally:
        d.quit()
        server.shutdown()
    print(args.out)


if __name__ == "__main__":
    main()
