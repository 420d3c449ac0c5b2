"""The playground page in headless Chromium against the real server (text models, one with a
chat template, and an image model, behind an API key): it lists the models, keeps a streamed
conversation, streams a completion, and shows generated images, each generation's timings side by
side; what it shows equals what the API returns for the same parameters, and the browser logs no error (a blocked external asset
or a script error would be one)."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.integration.serverproc import ServerProcess

from .test_companion import set_field

pytestmark = [pytest.mark.browser, pytest.mark.integration]
KEY = "sk-browser-0123456789abcdef"


@pytest.fixture(scope="module")
def server(gpt2_bundle, llama_bundle, dcgan_bundle):
    proc = ServerProcess(gpt2_bundle, llama_bundle, dcgan_bundle, env={"EDGEGEN_API_KEYS": KEY})
    proc.wait_ready()
    yield proc
    code, output = proc.stop()
    assert code == 0, output


def test_playground_streams_text_and_shows_images(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.base + "/")
    assert browser.title == "EdgeGen playground"
    key = browser.find_element(By.ID, "key")
    key.send_keys(KEY)
    browser.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
    wait.until(lambda d: len(Select(d.find_element(By.ID, "text-model")).options) == 2)
    assert [o.get_attribute("value") for o in
            Select(browser.find_element(By.ID, "chat-model")).options] == ["tiny-llama"]
    assert Select(browser.find_element(By.ID, "image-model")).first_selected_option \
        .get_attribute("value") == "tiny-dcgan"
    assert browser.find_element(By.ID, "chat").is_displayed()  # chat first, a model can chat
    browser.find_element(By.ID, "tab-text").click()
    Select(browser.find_element(By.ID, "text-model")).select_by_value("tiny-gpt2")

    # Text, streamed, seeded: the page shows the prompt plus exactly the API's answer.
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("The for statement")
    for field, value in (("max-tokens", "24"), ("text-seed", "11")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    assert browser.find_element(By.ID, "stream").is_selected()
    browser.find_element(By.ID, "complete").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "text-timings"), "finish:"))
    shown = browser.find_element(By.ID, "completion").text
    api = requests.post(server.base + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "tiny-gpt2", "prompt": "The for statement",
                              "max_tokens": 24, "temperature": 0.8, "top_p": 0.95, "seed": 11},
                        timeout=30).json()
    assert shown == ("The for statement" + api["choices"][0]["text"]).strip()
    timings = browser.find_element(By.ID, "text-timings").text
    assert "tokens/s" in timings and "energy: no power sensor" in timings

    # Images: n PNGs, the same bytes as the API gives for the same seed.
    browser.find_element(By.ID, "tab-images").click()
    for field, value in (("n", "3"), ("image-seed", "42")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#images img")) == 3)
    images = browser.find_elements(By.CSS_SELECTOR, "#images img")
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && "
                                              "arguments[0].naturalWidth", img) for img in images))
    assert {browser.execute_script("return arguments[0].naturalWidth", img) for img in images} \
        == {32}
    api = requests.post(server.base + "/v1/images/generations",
                        headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "tiny-dcgan", "n": 3, "seed": 42}, timeout=30).json()
    shown = [img.get_attribute("src").split(",", 1)[1] for img in images]
    assert shown == [d["b64_json"] for d in api["data"]]
    assert base64.b64decode(shown[0]).startswith(b"\x89PNG")

    # Side by side: each generation is a row, newest first, with its model and figures.
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert [r[:2] for r in rows] == [["tiny-dcgan", "images"], ["tiny-gpt2", "text"]], rows
    assert rows[0][5] == "3" and 0 < int(rows[1][5]) <= 24 and float(rows[1][3]) > 0
    assert float(rows[0][4]) > 0 and rows[0][2] == "–"  # images have no first token

    # The one expected error: the first model listing, sent before the key was typed (401).
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not ("/v1/models" in e["message"] and "status of 401" in e["message"])]
    assert not errors, errors


def test_wrong_key_is_shown_as_an_error(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.base + "/")
    browser.execute_script("localStorage.setItem('edgegen-key', 'wrong-key-0123456789abcdef')")
    browser.get(server.base + "/")
    WebDriverWait(browser, 30).until(
        lambda d: "401" in d.find_element(By.ID, "status").text)
    assert "missing or invalid API key" in browser.find_element(By.ID, "status").text


def test_playground_chat_keeps_the_conversation_and_streams_the_apis_reply(browser, server):
    """Two turns, greedy and streamed: each reply shown equals the API's answer to the same
    conversation (the first reply sent back as the assistant's turn), with its timings."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.base + "/")
    browser.execute_script(f"localStorage.setItem('edgegen-key', '{KEY}')")
    browser.get(server.base + "/")
    wait.until(lambda d: d.find_element(By.ID, "chat").is_displayed()
               and d.find_element(By.ID, "chat-model").get_attribute("value") == "tiny-llama")
    for field, value in (("chat-temperature", "0"), ("chat-max-tokens", "12"),
                         ("system", "Answer briefly.")):
        set_field(browser, field, value)
    assert browser.find_element(By.ID, "chat-stream").is_selected()
    messages = [{"role": "system", "content": "Answer briefly."}]
    for turn, question in enumerate(("What does the while statement do?", "And for?"), 1):
        set_field(browser, "message", question)
        browser.find_element(By.ID, "send").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "chat-timings"), "finish:"))
        shown = browser.execute_script(
            f"return document.getElementById('reply-{2 * turn - 1}').textContent")
        messages.append({"role": "user", "content": question})
        api = requests.post(server.base + "/v1/chat/completions",
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                            json={"model": "tiny-llama", "messages": messages,
                                  "max_completion_tokens": 12, "temperature": 0}).json()
        reply = api["choices"][0]["message"]["content"]
        assert shown == reply and reply, (turn, shown, api)
        messages.append({"role": "assistant", "content": reply})
        timings = browser.find_element(By.ID, "chat-timings").text
        assert "tokens/s" in timings or "first token" in timings, timings
    turns = browser.find_elements(By.CSS_SELECTOR, "#chat-log .turn")
    assert [t.get_attribute("class") for t in turns] == ["turn user", "turn assistant"] * 2
    browser.find_element(By.ID, "clear").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "#chat-log .turn")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not ("/v1/models" in e["message"] and "status of 401" in e["message"])]
    assert not errors, errors
