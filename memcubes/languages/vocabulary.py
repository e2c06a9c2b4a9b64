"""Word lists per language, written as prose (easier to review than columns of quoted strings).

Every word is folded as ``words.fold`` folds text: lower case, diacritics removed ("você" is
"voce"), so a user who types without accents is read the same. ``first_person`` holds pronouns
and possessives; ``verbs`` the first-person forms of verbs people use to state facts about
themselves, for the languages that drop the pronoun ("Moro em Coimbra", "Trabajo en Madrid").
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Vocabulary:
    stop: frozenset[str]
    first_person: frozenset[str]
    verbs: frozenset[str]
    questions: frozenset[str]  # a sentence starting with one asks (a "?" may be missing)
    requests: re.Pattern[str]  # a sentence starting with one asks the assistant for something
    chitchat: frozenset[str]  # a sentence made only of these says nothing lasting
    hypothetical: frozenset[str]  # "if I were ..." states nothing true
    remember: re.Pattern[str]  # "please remember that ...": what follows is the statement


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _lead(text: str) -> re.Pattern[str]:
    """Matches one or more of the comma-separated phrases at the start of a sentence as typed
    (case-insensitive; write each accented word as users type it, with and without accents)."""
    phrases = "|".join(" ".join(phrase.split()).replace(" ", r"[\s,]+") for phrase in text.split(","))
    return re.compile(rf"^(?:(?:{phrases})(?![\w'-])[\s,:;!.]*)+", re.I)


def _phrases(text: str) -> re.Pattern[str]:
    """Matches text starting with one of the comma-separated phrases (as whole words)."""
    phrases = (re.escape(" ".join(phrase.split())) for phrase in text.split(","))
    return re.compile(rf"^(?:{'|'.join(phrases)})(?![\w'-])")


ENGLISH_STOP = _words(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves ever also tell know i'm i've it's
    that's what's"""
)

PORTUGUESE = Vocabulary(
    stop=_words(
        """a o as os um uma uns umas de do da dos das em no na nos nas num numa ao aos a as por pelo pela
        pelos pelas para pra com sem sob sobre entre ate e ou mas que se nao sim ja mais muito muita
        muitos muitas pouco tambem so eu tu ele ela nos vos eles elas voce voces me te lhe lhes mim ti
        meu minha meus minhas teu tua seu sua seus suas nosso nossa nossos nossas dele dela deles delas
        este esta estes estas esse essa esses essas isto isso aquilo aquele aquela qual quais quem onde
        quando como porque porquê quanto quanta quantos quantas o que e sou es somos sao foi era eram
        ser estar estou esta estao tenho tem temos ter ha havia vou vai lembras lembra sabes sabe diz
        diga dizer qual e coisa algum alguma"""
    ),
    first_person=_words("eu meu minha meus minhas mim comigo nos nosso nossa nossos nossas connosco conosco"),
    verbs=_words(
        """moro vivo trabalho sou estou tenho gosto adoro amo odeio detesto prefiro vou fui estudo
        estudei nasci cresci mudei comecei deixei larguei acabei casei divorciei comprei vendi
        pretendo quero planeio planejo penso costumo ando jogo toco corro cozinho leio falo uso
        conduzo dirijo viajo viajei visitei perdi ganhei tive fiz comi bebo como chamo-me tenciono
        dou faco sigo chamo mudei-me casei-me formei-me morava vivia trabalhava estudava tinha
        estava ia"""
    ),
    questions=_words("que qual quais quem onde quando porque quanto quanta quantos quantas sera"),  # "como": I eat
    requests=_phrases(
        """por favor, podes, pode, poderia, poderias, consegues, escreve, escreva, traduz, traduza,
        explica, explique, diz-me, diga-me, ajuda-me, ajude-me, faz, faca, mostra, mostre, lista,
        liste, resume, resuma, cria, crie, sugere, sugira, recomenda, recomende, lembra-me"""
    ),
    chitchat=_words(
        """ola oi bom dia boa tarde noite obrigado obrigada valeu ok okay sim nao claro certo tchau
        adeus ate logo beleza fixe otimo perfeito entendi percebi tudo bem haha kkk"""
    ),
    hypothetical=_words("se imagina imagine suponha supondo caso"),
    remember=_lead(
        """por favor, lembra-te de que, lembra-te que, lembre-se de que, lembre-se que, lembra que,
        n[aã]o te esque[cç]as de que, n[aã]o te esque[cç]as que, n[aã]o esque[cç]a que, s[oó] para saberes,
        fica a saber que, olha"""
    ),
)

SPANISH = Vocabulary(
    stop=_words(
        """el la los las un una unos unas lo de del al a en por para con sin sobre entre hasta desde y
        e o u pero que si no ya mas muy mucho mucha muchos muchas poco tambien solo yo tu el ella
        nosotros nosotras vosotros ellos ellas usted ustedes me te se le les nos os mi mis tu tus su
        sus nuestro nuestra nuestros nuestras este esta estos estas ese esa esos esas esto eso aquel
        cual cuales quien quienes donde cuando como porque por que cuanto cuanta cuantos cuantas soy
        eres es somos son fue era ser estar estoy esta estan tengo tiene tenemos tener hay voy va
        sabes sabe dime recuerdas recuerda algo"""
    ),
    first_person=_words("yo mi mis conmigo nosotros nosotras nuestro nuestra nuestros nuestras"),
    verbs=_words(
        """vivo trabajo soy estoy tengo gusta encanta odio prefiero voy fui estudio estudie naci creci
        mude empece deje termine case divorcie compre vendi pienso quiero planeo suelo juego toco
        corro cocino leo hablo uso conduzco manejo viajo viaje visite perdi gane tuve hice como bebo
        llamo dedico sigo acabo encantan gustan vivia trabajaba estudiaba tenia estaba iba"""
    ),
    questions=_words("que cual cuales quien quienes donde adonde cuando cuanto cuanta cuantos cuantas"),
    requests=_phrases(
        """por favor, puedes, puede, podrias, podria, escribe, escriba, traduce, traduzca, explica,
        explique, dime, digame, ayudame, haz, haga, muestra, muestrame, lista, resume, crea, sugiere,
        recomienda, recuerdame"""
    ),
    chitchat=_words(
        """hola buenos buenas dias tardes noches gracias vale ok okay si no claro bien adios hasta luego
        genial perfecto entendido jaja jeje bueno"""
    ),
    hypothetical=_words("si imagina imaginemos supongamos suponiendo"),
    remember=_lead("por favor, recuerda que, acu[eé]rdate de que, no olvides que, que sepas que, para que sepas, oye"),
)

FRENCH = Vocabulary(
    stop=_words(
        """le la les l un une des du de d au aux a en dans par pour avec sans sur sous entre jusqu
        depuis et ou mais que qu qui si ne pas plus tres beaucoup peu aussi seulement je j tu il elle
        on nous vous ils elles me m te t se s lui leur leurs mon ma mes ton ta tes son sa ses notre
        nos votre vos ce cet cette ces cela ca quel quelle quels quelles quoi ou quand comment
        pourquoi combien est-ce suis es est sommes etes sont etait ete etre avoir ai as avons avez ont
        y c n rappelles sais dis chose"""
    ),
    first_person=_words("je j moi m mon ma mes nous notre nos"),
    verbs=_words(""),  # French states the subject: "je", "j'"
    questions=_words("que qu quel quelle quels quelles qui quoi ou quand comment pourquoi combien est-ce"),
    requests=_phrases(
        """s'il te plait, s'il vous plait, svp, pourrais-tu, pourriez-vous, peux-tu, pouvez-vous, ecris,
        ecrivez, traduis, traduisez, explique, expliquez, dis-moi, dites-moi, aide-moi, aidez-moi,
        fais, faites, montre, montrez, liste, resume, cree, propose, recommande, rappelle-moi"""
    ),
    chitchat=_words(
        """bonjour bonsoir salut coucou merci ok okay oui non d'accord bien super parfait genial
        entendu compris au revoir a bientot haha mdr"""
    ),
    hypothetical=_words("si imagine imaginons supposons"),
    remember=_lead(
        """s'il te pla[iî]t, s'il vous pla[iî]t, rappelle-toi que, souviens-toi que, n'oublie pas que,
        pour info, au fait, sache que"""
    ),
)

GERMAN = Vocabulary(
    stop=_words(
        """der die das den dem des ein eine einen einem einer eines in im an am auf aus bei mit nach
        von vom zu zum zur fur uber unter zwischen bis seit und oder aber dass ob wenn nicht kein
        keine ja nein sehr viel viele wenig auch nur noch schon ich du er sie es wir ihr mich mir
        dich dir sich uns euch mein meine meinen meinem meiner meines dein deine sein seine ihr ihre
        unser unsere euer dieser diese dieses jener welche welcher welches wer wen wem wessen was wo
        wohin woher wann wie warum wieviel welchen welchem bin bist ist sind seid war waren sein habe hast
        hat haben hatte werde wird weisst erinnerst sag sagen etwas denn doch mal"""
    ),
    first_person=_words("ich mich mir mein meine meinen meinem meiner meines wir uns unser unsere unseren unserem"),
    verbs=_words(""),  # German states the subject: "ich"
    questions=_words("was wer wen wem wessen wo wohin woher wann wie warum weshalb welche welcher welches"),
    requests=_phrases(
        """bitte, kannst du, konntest du, konnen sie, schreib, schreibe, ubersetze, ubersetz, erklar,
        erklare, sag mir, hilf, mach, zeig, liste, fasse, erstelle, schlag, empfiehl, erinnere mich"""
    ),
    chitchat=_words(
        """hallo hi servus moin guten morgen tag abend danke dankeschon ok okay ja nein klar gut super
        perfekt verstanden tschuss bis bald haha genau alles"""
    ),
    hypothetical=_words("wenn falls angenommen stell"),
    remember=_lead(
        "bitte, merk dir dass, merk dir, denk daran dass, denk dran dass, vergiss nicht dass, [uü]brigens, zur info"
    ),
)

ITALIAN = Vocabulary(
    stop=_words(
        """il lo la i gli le l un uno una un' di del dello della dei degli delle a al allo alla ai
        agli alle da dal dalla in nel nello nella nei negli nelle su sul sulla con per tra fra e ed o
        ma che se non si gia piu molto molta molti molte poco anche solo io tu lui lei noi voi loro mi
        ti ci vi gli ne me te mio mia miei mie tuo tua tuoi tue suo sua suoi sue nostro nostra nostri
        nostre questo questa questi queste quello quella chi cosa quale quali dove quando come
        perche quanto quanta quanti quante sono sei e siamo siete era stato essere ho hai ha abbiamo
        hanno avere sai ricordi dimmi qualcosa"""
    ),
    first_person=_words("io mi mio mia miei mie noi nostro nostra nostri nostre"),
    verbs=_words(
        """vivo abito lavoro sono ho amo adoro odio preferisco vado andro studio nato nata cresciuto
        cresciuta trasferito trasferita cominciato iniziato lasciato sposato sposata comprato voglio
        penso pianifico gioco suono corro cucino leggo parlo uso guido viaggio visitato perso vinto
        faccio mangio bevo chiamo seguo insegno sto tifo vivevo abitavo lavoravo studiavo avevo ero"""
    ),
    questions=_words("che cosa chi quale quali dove quando come perche quanto quanta quanti quante"),
    requests=_phrases(
        """per favore, puoi, potresti, scrivi, scriva, traduci, spiega, spieghi, dimmi, mi dica,
        aiutami, fai, faccia, mostra, mostrami, elenca, riassumi, crea, suggerisci, consiglia,
        ricordami"""
    ),
    chitchat=_words(
        """ciao salve buongiorno buonasera grazie ok okay si no certo bene perfetto capito ottimo
        arrivederci presto haha dai"""
    ),
    hypothetical=_words("se immagina immaginiamo supponiamo"),
    remember=_lead(
        "per favore, ricorda che, ricordati che, non dimenticare che, tieni presente che, sappi che, comunque"
    ),
)

VOCABULARIES: dict[str, Vocabulary] = {
    "pt": PORTUGUESE,
    "es": SPANISH,
    "fr": FRENCH,
    "de": GERMAN,
    "it": ITALIAN,
}


def stop_words(language: str) -> frozenset[str]:
    """English stop words, plus the language's own: a query in any language may mix in English."""
    vocabulary = VOCABULARIES.get(language)
    return ENGLISH_STOP | vocabulary.stop if vocabulary is not None else ENGLISH_STOP
