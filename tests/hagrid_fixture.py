"""A small HAGRID-schema dataset written by the tests: twelve real-looking queries (encyclopaedic
quotes, answers citing them inline as HAGRID's do), eight for train.jsonl and four for dev.jsonl.

Answers carry the annotations the gold-answer policy reads: some queries have an answer that is
not attributable (or not annotated: null) before the one that is, so the policy has a choice.
"""

import json
from pathlib import Path


def quote(idx, docid, text):
    return {"idx": idx, "docid": docid, "text": text}


def answer(text, informative=1, attributable=1, sentences=()):
    return {"answer": text, "answer_type": "attributed_answer", "informative": informative,
            "attributable": attributable,
            "sentences": [{"text": s, "index": i, "answer_type": "attributed_answer", "informative": informative,
                           "attributable": attributable} for i, s in enumerate(sentences or [text])]}


QUERIES = [
    {"query_id": "101", "query": "What is the capital of Australia?",
     "quotes": [quote(1, "1001#0", "Canberra is the capital city of Australia. Founded following the federation of the colonies of Australia as the seat of government for the new nation, it is the largest inland city in the country."),
                quote(2, "1002#3", "Sydney is the capital city of the state of New South Wales and the most populous city in Australia.")],
     "answers": [answer("The capital of Australia is Canberra [1]. It was founded as the seat of government after federation [1]."),
                 answer("Canberra is the capital of Australia, while Sydney is its most populous city [1, 2].")]},
    {"query_id": "102", "query": "Who wrote the novel Frankenstein?",
     "quotes": [quote(1, "2001#0", "Frankenstein; or, The Modern Prometheus is an 1818 novel written by English author Mary Shelley."),
                quote(2, "2001#4", "Shelley started writing the story when she was 18, and the first edition was published anonymously in London.")],
     "answers": [answer("Frankenstein was written by Mary Shelley [1]. She began it at the age of 18 [2].")]},
    {"query_id": "103", "query": "How tall is Mount Everest?",
     "quotes": [quote(1, "3001#0", "Mount Everest is Earth's highest mountain above sea level, located in the Mahalangur Himal sub-range of the Himalayas."),
                quote(2, "3001#2", "The China–Nepal border runs across its summit point. Its elevation of 8,848.86 m was most recently established in 2020 by the Chinese and Nepali authorities.")],
     "answers": [answer("Mount Everest is the highest mountain on Earth.", informative=1, attributable=None),
                 answer("Mount Everest is 8,848.86 metres tall, an elevation established in 2020 [2]. It is the highest mountain above sea level [1].")]},
    {"query_id": "104", "query": "What do pandas eat?",
     "quotes": [quote(1, "4001#1", "The giant panda's diet is over 99% bamboo. Pandas in the wild occasionally eat other grasses, wild tubers, or even meat in the form of birds, rodents, or carrion."),
                quote(2, "4001#5", "In captivity, giant pandas may receive honey, eggs, fish, yams, shrub leaves, oranges, or bananas along with specially prepared food."),
                quote(3, "4002#0", "The red panda is a small mammal native to the eastern Himalayas and southwestern China.")],
     "answers": [answer("Pandas eat mostly bamboo, which makes up over 99% of their diet [1]. In captivity they may also receive honey, eggs, fish and fruit [2].")]},
    {"query_id": "105", "query": "When did the Berlin Wall fall?",
     "quotes": [quote(1, "5001#0", "The Berlin Wall was a guarded concrete barrier that encircled West Berlin from 1961 to 1989."),
                quote(2, "5001#7", "On 9 November 1989, the East German government announced that all citizens could visit West Germany and West Berlin, and crowds began to climb onto the wall.")],
     "answers": [answer("The Berlin Wall fell on 9 November 1989 [2].", attributable=0),
                 answer("The Berlin Wall fell on 9 November 1989, when East Germany announced that its citizens could cross [2]. It had stood since 1961 [1].")]},
    {"query_id": "106", "query": "What is photosynthesis?",
     "quotes": [quote(1, "6001#0", "Photosynthesis is a process used by plants and other organisms to convert light energy into chemical energy that is stored in sugars."),
                quote(2, "6001#2", "Most plants, algae, and cyanobacteria perform photosynthesis; such organisms are called photoautotrophs. Oxygen is released as a waste product.")],
     "answers": [answer("Photosynthesis is the process by which plants and other organisms turn light energy into chemical energy stored in sugars [1]. It releases oxygen as a by-product [2].")]},
    {"query_id": "107", "query": "Who painted the Mona Lisa?",
     "quotes": [quote(1, "7001#0", "The Mona Lisa is a half-length portrait painting by Italian artist Leonardo da Vinci."),
                quote(2, "7001#3", "The painting has been on permanent display at the Louvre in Paris since 1797.")],
     "answers": [answer("The Mona Lisa was painted by Leonardo da Vinci [1]. It hangs in the Louvre in Paris [2]."),
                 answer("Leonardo da Vinci painted the Mona Lisa [1].")]},
    {"query_id": "108", "query": "What is the largest ocean on Earth?",
     "quotes": [quote(1, "8001#0", "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions. It extends from the Arctic Ocean in the north to the Southern Ocean in the south."),
                quote(2, "8002#0", "The Atlantic Ocean is the second-largest of the world's five oceans, with an area of about 106,460,000 square kilometres.")],
     "answers": [answer("The Pacific Ocean is the largest and deepest ocean on Earth [1]. The Atlantic is the second largest [2].")]},
    {"query_id": "201", "query": "What language is spoken in Brazil?",
     "quotes": [quote(1, "9001#0", "Portuguese is the official and national language of Brazil, and is widely spoken by most of the population."),
                quote(2, "9001#6", "Brazil is the only Portuguese-speaking nation in the Americas, making the language an important part of Brazilian national identity.")],
     "answers": [answer("The official language of Brazil is Portuguese [1]. It is the only Portuguese-speaking country in the Americas [2]."),
                 answer("People in Brazil speak Portuguese [1, 2].")]},
    {"query_id": "202", "query": "How many moons does Mars have?",
     "quotes": [quote(1, "9101#0", "Mars has two natural satellites, Phobos and Deimos, which are small and irregularly shaped."),
                quote(2, "9101#3", "Both moons were discovered in 1877 by the American astronomer Asaph Hall.")],
     "answers": [answer("Mars has two moons, Phobos and Deimos [1]. Both were discovered in 1877 by Asaph Hall [2].")]},
    {"query_id": "203", "query": "What is the boiling point of water?",
     "quotes": [quote(1, "9201#0", "At standard atmospheric pressure, water boils at 100 degrees Celsius, or 212 degrees Fahrenheit."),
                quote(2, "9201#2", "At higher altitudes, where atmospheric pressure is lower, water boils at a lower temperature.")],
     "answers": [answer("Water boils at 100 degrees Celsius at standard atmospheric pressure [1]. At high altitude it boils at a lower temperature [2].")]},
    {"query_id": "204", "query": "Who was the first person to walk on the Moon?",
     "quotes": [quote(1, "9301#0", "Neil Armstrong was an American astronaut who became the first person to walk on the Moon on 20 July 1969, as commander of Apollo 11."),
                quote(2, "9301#1", "Buzz Aldrin joined Armstrong on the lunar surface about 19 minutes later.")],
     "answers": [answer("Neil Armstrong was the first person to walk on the Moon, on 20 July 1969 [1].", attributable=None),
                 answer("Neil Armstrong, commander of Apollo 11, was the first person to walk on the Moon on 20 July 1969 [1]. Buzz Aldrin followed him [2].")]},
]
TRAIN_IDS = ("101", "102", "103", "104", "105", "106", "107", "108")


def write_hagrid(folder: Path) -> Path:
    """train.jsonl and dev.jsonl of the fixture under `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, keep in (("train.jsonl", lambda q: q["query_id"] in TRAIN_IDS),
                       ("dev.jsonl", lambda q: q["query_id"] not in TRAIN_IDS)):
        (folder / name).write_text("".join(json.dumps(q) + "\n" for q in QUERIES if keep(q)))
    return folder
