"""The contact form and the status page in each language (issue 21), on SQLite and
PostgreSQL: chosen by the selector (`lang`), else Accept-Language, else the case's language,
else English; the chosen language becomes the case's. A browser test walks the Spanish form
and status page in headless Chromium, with axe-core's rules on each page.

The expected words are written here by hand, not read from the catalogues.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import Engine, select

from inbox.models import Case
from tests.channels.webform.support import Site
from tests.channels.webform.test_browser import Server, assert_accessible, until
from tests.support.helpers import normalize

# The form's heading, its send button and the state word of a new case, per language.
WORDS = {
    "en": ("Contact support", "Send", "Received"),
    "es": ("Contactar con soporte", "Enviar", "Recibido"),
    "fr": ("Contacter le support", "Envoyer", "Reçu"),
    "de": ("Support kontaktieren", "Senden", "Eingegangen"),
    "pt": ("Fale com o suporte", "Enviar", "Recebido"),
}
# What the answer page says once the case exists.
DONE = {
    "en": "We have your message. Your case reference is {reference}.",
    "es": "Hemos recibido su mensaje. La referencia de su caso es {reference}.",
    "fr": "Nous avons bien reçu votre message. La référence de votre dossier est {reference}.",
    "de": "Wir haben Ihre Nachricht erhalten. Ihre Fallnummer ist {reference}.",
    "pt": "Recebemos sua mensagem. A referência do seu caso é {reference}.",
}
# The error for a form with neither an address nor a number.
NO_ADDRESS = {
    "en": "Please give an email address or a phone number, so we can answer you.",
    "es": "Indique un correo electrónico o un número de teléfono para que podamos responderle.",
    "fr": (
        "Indiquez une adresse e-mail ou un numéro de téléphone, pour que nous puissions "
        "vous répondre."
    ),
    "de": (
        "Bitte geben Sie eine E-Mail-Adresse oder eine Telefonnummer an, damit wir Ihnen "
        "antworten können."
    ),
    "pt": "Informe um e-mail ou um número de telefone para podermos responder.",
}


def heading(html: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", html)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("lang", list(WORDS))
async def test_the_form_in_each_language_by_the_selector(engine: Engine, lang: str) -> None:
    async with Site(engine) as site:
        status, html, headers = await site.get(f"/contact?lang={lang}")
    assert status == 200
    assert f'<html lang="{lang}">' in html
    assert headers["Content-Language"] == lang
    assert "Accept-Language" in headers["Vary"]
    title, send, _ = WORDS[lang]
    assert heading(html) == title
    assert f">{send}</button>" in html
    assert f'<input type="hidden" name="lang" value="{lang}">' in html
    # The selector: a plain link per language, the current one marked.
    for code in WORDS:
        assert f'href="/contact?lang={code}"' in html
    assert re.search(rf'hreflang="{lang}" aria-current="true"', html)


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("de-CH, de;q=0.9, en;q=0.5", "de"),
        ("it, pt-BR;q=0.8", "pt"),
        ("ja", "en"),
        ("fr;q=0, es;q=0.2", "es"),
    ],
)
async def test_without_a_choice_the_browsers_accept_language_decides(
    engine: Engine, header: str, lang: str
) -> None:
    async with Site(engine) as site:
        response = await site.client.get("/contact", headers={"Accept-Language": header})
        html = await response.text()
        # The selector beats the header.
        chosen = await site.client.get("/contact?lang=fr", headers={"Accept-Language": header})
        chosen_html = await chosen.text()
    assert heading(html) == WORDS[lang][0]
    assert heading(chosen_html) == WORDS["fr"][0]


@pytest.mark.parametrize("lang", ["es", "de"])
async def test_errors_are_in_the_forms_language(engine: Engine, lang: str) -> None:
    async with Site(engine) as site:
        status, html, _ = await site.send(email="", phone="", lang=lang)
    assert status == 400
    assert NO_ADDRESS[lang] in html
    assert f'<html lang="{lang}">' in html


@pytest.mark.parametrize("lang", list(WORDS))
async def test_a_post_in_a_language_makes_a_case_in_it_and_its_pages_speak_it(
    engine: Engine, lang: str
) -> None:
    async with Site(engine) as site:
        # The text is English whatever the page: the person's choice wins over detection.
        status, _, headers = await site.send(
            text="My account was taken over and I cannot log in.", lang=lang
        )
        assert status == 303
        normalize(engine)
        with engine.connect() as conn:
            case = conn.execute(select(Case.reference, Case.token, Case.language)).one()
        assert case.language == lang
        status, html, _ = await site.get(headers["Location"])
        assert status == 200
        assert DONE[lang].format(reference=case.reference) in html
        # The status link opens in the chosen language.
        link = re.search(r'id="status-link" href="([^"]+)"', html)
        assert link is not None
        assert ("lang=" + lang in link.group(1)) == (lang != "en")
        # The status page with no choice and no header: the case's language.
        status, page, _ = await site.get(f"/status/{case.reference}?t={case.token}")
        assert status == 200
        assert f'<dd id="state">{WORDS[lang][2]}</dd>' in page
        # The reader's choice beats the case's.
        other = "de" if lang != "de" else "es"
        _, page, _ = await site.get(f"/status/{case.reference}?t={case.token}&lang={other}")
        assert f'<dd id="state">{WORDS[other][2]}</dd>' in page
        assert f'href="/status/{case.reference}?t={case.token}&amp;lang=en"' in page


async def test_a_wrong_token_is_the_same_404_in_every_language(engine: Engine) -> None:
    async with Site(engine) as site:
        pages = [await site.get(f"/status/C-000001?t=wrong&lang={lang}") for lang in WORDS]
    assert {status for status, _, _ in pages} == {404}


def test_the_spanish_form_and_status_page_in_a_browser(
    engine: Engine, browser: WebDriver, tmp_path: Path
) -> None:
    with Server(engine, pow_bits=12, pow_max_bits=12) as server:
        browser.get(server.url + "/contact")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Contact support"
        # The selector is a link: no script needed to change language.
        browser.find_element(By.LINK_TEXT, "Español").click()
        until(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == WORDS["es"][0])
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
        assert browser.find_element(By.CSS_SELECTOR, "label[for=name]").text == "Su nombre"
        assert_accessible(browser)
        browser.find_element(By.ID, "name").send_keys("Lucía Pérez")
        browser.find_element(By.ID, "text").send_keys("x")
        browser.find_element(By.ID, "send").click()
        until(browser, lambda d: d.find_elements(By.ID, "email-error"))
        assert NO_ADDRESS["es"] in browser.find_element(By.ID, "email-error").text
        assert_accessible(browser)
        browser.find_element(By.ID, "email").send_keys("lucia@example.org")
        text = browser.find_element(By.ID, "text")
        text.clear()
        text.send_keys("Perdí el acceso a mi cuenta y a mi correo.")
        browser.find_element(By.ID, "send").click()
        until(browser, lambda d: "/contact/received/" in d.current_url)
        normalize(engine)
        until(browser, lambda d: d.find_elements(By.ID, "reference"))
        with engine.connect() as conn:
            case = conn.execute(select(Case.reference, Case.language)).one()
        assert case.language == "es"
        assert browser.find_element(By.ID, "reference").text == DONE["es"].format(
            reference=case.reference
        )
        assert browser.find_element(By.ID, "eta").text.startswith("Una persona le responderá")
        assert_accessible(browser)
        link = browser.find_element(By.ID, "status-link").get_attribute("href") or ""
        browser.get(server.url + link.split("127.0.0.1", 1)[1])
        until(browser, lambda d: d.find_elements(By.ID, "state"))
        assert browser.find_element(By.ID, "state").text == "Recibido"
        assert browser.find_element(By.ID, "add-send").text == "Añadir al caso"
        assert_accessible(browser)


@pytest.fixture
def browser():
    from tests.channels.webform.test_browser import chromium

    driver = chromium(javascript=True)
    try:
        yield driver
    finally:
        driver.quit()
