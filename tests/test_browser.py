"""The web chat in a real browser (headless Chromium driven by Playwright): a whole
conversation, checked as a person sees it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.cli_support import environment, free_port, wait_healthy, write_config

CHROMIUM = "/usr/bin/chromium"  # Debian's; `make test` installs it when missing
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def chat_url(tmp_path: Path) -> AsyncIterator[str]:
    config = write_config(
        tmp_path,
        {"log": {"level": "warning", "format": "json"}, "bot": {"max_group_size": 4}},
    )
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(config), "--port", str(port),
            cwd=tmp_path, env=environment(), stdout=output, stderr=output,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(process, url, log)
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()


async def say(page: Page, n: int, text: str) -> None:
    box = page.locator(".phone").nth(n)
    await box.locator("input").fill(text)
    await box.locator("input").press("Enter")


async def test_a_whole_conversation_as_the_members_see_it(browser: Browser, chat_url: str) -> None:
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await page.goto(chat_url)
    await page.get_by_role("button", name="Open group").click()
    phones = page.locator(".phone")
    await expect(phones).to_have_count(3)
    await expect(phones.nth(1).locator("h2")).to_contain_text("+1 123-456-7892")

    await say(page, 0, "ticket 42")

    answer = "Ticket #42 is open. Everyone in this thread (3 people) will get its updates here."
    for n in range(3):
        thread = phones.nth(n).locator(".thread")
        await expect(thread.locator(".bubble").first).to_contain_text("ticket 42")
        await expect(thread.locator(".bubble.bot")).to_contain_text(answer)
        await expect(thread.locator(".bubble.bot .status")).to_have_text("delivered")
    await expect(phones.nth(0).locator(".bubble").first).to_have_class("bubble mine ")
    await expect(phones.nth(1).locator(".bubble").first.locator(".who")).to_have_text(
        "+1 123-456-7891"
    )
    # The bot's message to the second member lists the other two as participants.
    await expect(phones.nth(1).locator(".bubble.bot")).to_have_attribute(
        "title", "to +1 123-456-7892, with +1 123-456-7891, +1 123-456-7893"
    )

    await say(page, 2, "which van is yours?")

    van = phones.nth(1).locator(".bubble.bot").last
    await expect(van.locator("a.media")).to_contain_text("Photo van.jpg")
    await expect(van).to_contain_text("This is our van.")

    await say(page, 1, "see you all at noon")

    await expect(phones.nth(0).locator(".bubble").last).to_contain_text("see you all at noon")
    await expect(phones.nth(0).locator(".bubble.bot")).to_have_count(2)  # no answer to that


async def test_a_group_of_numbers_that_cannot_be_one_is_explained(
    browser: Browser, chat_url: str
) -> None:
    page = await browser.new_page()
    await page.goto(chat_url)

    await page.locator("#numbers").fill("2025550121, 12025550122")
    await page.get_by_role("button", name="Open group").click()
    await expect(page.locator("#problem")).to_have_text(
        "2025550121: expected a US or Canadian number with its 1, like 12025550121"
    )
    await page.locator("#numbers").fill("12025550121")
    await page.get_by_role("button", name="Open group").click()

    await expect(page.locator("#problem")).to_have_text(
        "a group has 2 to 4 members besides the bot"
    )
    # The bot's own limit (bot.max_group_size), not one of the page's.
    await page.locator("#numbers").fill(", ".join(f"1202555012{n}" for n in range(5)))
    await page.get_by_role("button", name="Open group").click()
    await expect(page.locator("#problem")).to_have_text(
        "a group has 2 to 4 members besides the bot"
    )
    await expect(page.locator(".phone")).to_have_count(0)
