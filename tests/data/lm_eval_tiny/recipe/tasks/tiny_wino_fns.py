"""A fill-in-the-blank task in winogrande's shape: the choices differ in the context, the target is the shared tail."""


def gold_index(doc):
    return int(doc["answer"]) - 1


def after_blank(doc):
    return doc["sentence"].split("_", 1)[1].strip()


def before_blank_with_options(doc):
    head = doc["sentence"].split("_", 1)[0]
    return [head + doc["option1"], head + doc["option2"]]
