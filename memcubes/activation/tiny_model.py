"""A random Llama-style model and a locally trained tokenizer, written to a folder.

Nothing can be downloaded here, yet activation memory must be tested and measured on a real
transformers model that `AutoModelForCausalLM.from_pretrained` loads like any other. The weights
are random, so the text is noise, but prefill, cache reuse and decoding do exactly the work a
trained model of that shape would do. The tokenizer is a byte-level BPE trained in-process, so
every string encodes and decodes losslessly, and its chat template keeps the prefix property the
engine relies on: the rendering of the first k messages is a string prefix of the rendering of
all of them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
START_TOKEN = "<|im_start|>"
SPECIAL_TOKENS = (BOS_TOKEN, PAD_TOKEN, START_TOKEN, EOS_TOKEN, "<|endoftext|>")

# ChatML-like. Written without literal newlines (they are `{{ '\n' }}`) because transformers
# compiles templates with trim_blocks/lstrip_blocks, which would silently eat them. Each message
# renders independently of the ones after it, which gives the prefix property.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>tools{{ '\\n' }}{{ tools | tojson }}<|im_end|>{{ '\\n' }}{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}"
    "{% if message.get('name') %} name={{ message['name'] }}{% endif %}"
    "{% if message.get('tool_call_id') %} id={{ message['tool_call_id'] }}{% endif %}"
    "{{ '\\n' }}"
    "{% if message.get('content') is string %}{{ message['content'] }}"
    "{% elif message.get('content') %}"
    "{% for part in message['content'] %}"
    "{% if part.get('type') == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% if message.get('tool_calls') %}"
    "{% for call in message['tool_calls'] %}"
    "{{ '\\n' }}<tool_call>{{ call['function'] | tojson }}</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)

# Enough varied English for a few thousand merges; the byte alphabet covers everything else.
_CORPUS = """
You are a helpful assistant. Answer the user's question briefly and truthfully.
The user prefers green tea in the morning and strong coffee after lunch.
Alice lives in Paris with her two cats, Pixel and Mochi, and works as a software engineer.
Bob moved from Berlin to Lisbon last spring because he wanted to surf every weekend.
My sister's birthday is on the fourteenth of March; remind me a week before.
I am allergic to peanuts, so please never suggest recipes that contain them.
We decided to use PostgreSQL for the billing service and SQLite for local development.
The meeting with the design team was moved from Tuesday to Thursday at three o'clock.
Remember that I am training for a marathon in October and run five times a week.
She said the quarterly report should be finished by Friday, including the revenue tables.
Our support agent must always answer in the customer's language and stay polite.
What is the capital of Japan? The capital of Japan is Tokyo, a city of many millions.
How do I reverse a list in Python? Use the slice notation or the reversed function.
The weather today is cloudy with a chance of light rain in the late afternoon.
He likes science fiction novels, especially stories about distant planets and robots.
Please summarise the following document in three short bullet points.
The train to Amsterdam leaves at eight fifteen from platform nine.
They planted tomatoes, basil and peppers in the garden behind the old house.
Memory is a scheduled resource: facts are stored, retrieved, updated and forgotten.
A cache keeps the keys and values of attention layers so that a prefix is computed once.
The model reads the system message, the conversation history and the latest question.
When the server restarts, the stored files are loaded again from the data directory.
I work remotely from a small village in the mountains and need a stable internet connection.
Our company sells handmade furniture: tables, chairs, shelves and wooden toys for children.
Last year we travelled through Italy, visiting Rome, Florence, Venice and Naples.
The doctor recommended more sleep, less sugar and a short walk after every meal.
Can you translate this sentence into French, German and Spanish for the newsletter?
The function returns an error when the input is empty or longer than the allowed limit.
Tests should be fast, deterministic and independent of the network.
Numbers like 1, 2, 3, 10, 42, 100, 2024 and 3.14 appear in many conversations.
Dates such as 2024-05-17, 12 June 2023 and next Monday must be resolved to absolute days.
The dog barked at the postman, who dropped the letters and laughed.
Every evening she reads the news, writes in her journal and calls her mother.
A good answer is clear, correct, and no longer than it needs to be.
The project deadline is the end of the month, and the budget is almost spent.
Write a short poem about autumn leaves falling on a quiet river.
The user's favourite programming languages are Rust, Python and Haskell.
Thanks for your help! You're welcome; let me know if there is anything else.
Which tools are available? The search tool finds documents and the calculator adds numbers.
The temperature in the office is too cold in winter and too warm in summer.
Customers asked for a refund because the package arrived late and damaged.
Their children go to school by bicycle when the weather is good.
The library opens at nine in the morning and closes at six in the evening.
Do not share passwords, keys or other secrets in the chat.
The quick brown fox jumps over the lazy dog while the sun sets behind the hills.
Good morning! How are you today? I'm fine, thank you, and you? Not bad at all.
Could you book a table for four people at the Italian restaurant on Saturday evening?
The invoice number is INV-2024-0917 and the total amount is 1,250.00 euros.
Her flight to New York was delayed by two hours because of a storm over the Atlantic.
Please use metric units: kilometres, kilograms, litres and degrees Celsius.
The algorithm sorts the items by score, removes duplicates and keeps the top ten results.
Yesterday I cooked a vegetable curry with rice, lentils, ginger, garlic and coconut milk.
The museum exhibition shows paintings, sculptures and photographs from the last century.
Our team uses Git for version control, reviews every change and deploys twice a week.
If the request fails, retry it after a short delay and log the error message.
The children built a sandcastle on the beach and collected shells until sunset.
He bought a new laptop with sixteen gigabytes of memory and a fast solid state drive.
She is learning Japanese and practises vocabulary for twenty minutes every day.
The contract starts on the first of January and can be cancelled with three months' notice.
Where is the nearest pharmacy? It is around the corner, next to the bakery.
Notes: buy milk, eggs, bread, apples, cheese, onions, potatoes and olive oil.
The concert was cancelled, so we watched a documentary about whales instead.
A friendly reminder: the dentist appointment is tomorrow at half past ten.
Security updates are installed automatically every night between two and four.
about above across after again against almost alone along already also although always
among another answer anyone anything anywhere around because become before begin behind
believe below beside between beyond both bring build business busy call careful carry
certain change choose city clean clear close cold common complete consider continue
country course cover create cross current dark daughter dead deal decide deep describe
develop different difficult direction discover distance early easy economy education
effect either else energy enjoy enough enter environment especially even event ever
every example expect experience explain face fact family famous father feel field fight
figure final find fine finger fire first fish floor follow food foot force forest forget
form forward free friend front full future game general girl give glass go government
great green ground group grow guess hair half hand happen happy hard head health hear
heart heavy help here high history hold home hope horse hospital hot hour house however
human hundred husband idea important include increase indeed industry information inside
instead interest island itself job join just keep kind kitchen know land language large
late laugh law lead learn leave left less letter level life light likely line listen
little local long look lose love machine main major make manage many market matter maybe
mean measure member middle might million mind minute miss modern moment money month more
mother mountain move music must nation natural nature near necessary need never night
north nothing notice number object ocean offer office often open order other outside
own page pain paper parent part party pass past pay peace people perhaps period person
picture piece place plan plant play point police popular position possible power prepare
present pretty price private probably problem process produce product program public
pull purpose push quality question quickly quite race radio raise range rather reach
ready real reason receive record red reduce region relationship remain report require
research resource rest result return rich right rise road rock role room rule safe same
save say school science sea season seat second section seem sell send sense serious
serve set several shake share short should shoulder show side sign similar simple since
sing single sister sit situation size skill skin small smile social society soldier
some son song soon sort sound source south space speak special spend sport spring staff
stage stand star start state station stay step still stock stone stop store story street
strong structure student study style subject success sudden suggest summer support sure
surface system table take talk task teach teacher team tell term test than thank theory
thing think third though thought thousand threat through throw today together tonight
total tough toward town trade traditional travel tree trial trip trouble true truth try
turn type under understand unit until upon usually value various very victim view visit
voice vote wait walk wall want war watch water wave way weapon wear week weight west
whatever whether while white whole whose wide wife will win window wish within without
woman wonder word worker world worry would write wrong yard yeah year yellow young yourself
""".strip()


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer)
    return tokenizer


def build_tiny_tokenizer(*, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """The tokenizer alone, for tests that need no model."""
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def write_tiny_model(
    path: Path,
    *,
    layers: int = 8,
    hidden: int = 512,
    heads: int = 8,
    seed: int = 0,
    max_positions: int = 4096,
) -> Path:
    """Write a random float32 Llama and its tokenizer to ``path``; return ``path``.

    The seed fixes the weights, so two calls with the same arguments write the same model and two
    seeds give models of the same config but different weights (and fingerprints).
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=-(-hidden * 8 // 3 // 32) * 32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    fork_devices: list[str] = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)  # float32: the default dtype
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
