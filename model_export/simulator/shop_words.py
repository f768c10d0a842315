"""The simulated shop's departments and the words people use to look for things in them.

Each department (a category) has product nouns, facets (the sub-kind a
shopper has in mind: "trail" shoes, "decaf" coffee) and modifiers (size,
audience, material). Items are named from these words and search queries are
drawn from them, so query text carries real information about the category
and the facet, as it does in a shop. ``consumable`` departments sell things
people buy again when they run out; ``complements`` names the departments
whose items are bought together with this one's (a phone and its case).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Department:
    """One category of the shop and its vocabulary."""

    name: str
    nouns: tuple[str, ...]
    facets: tuple[str, ...]
    modifiers: tuple[str, ...]
    price: float  # median price in the shop's currency
    consumable: bool = False
    complements: tuple[str, ...] = ()


def _d(name: str, nouns: str, facets: str, modifiers: str, price: float,
       consumable: bool = False, complements: str = "") -> Department:
    return Department(name, tuple(nouns.split(",")), tuple(facets.split(",")),
                      tuple(modifiers.split(",")), price, consumable,
                      tuple(c for c in complements.split(",") if c))


DEPARTMENTS: tuple[Department, ...] = (
    _d("shoes", "shoes,sneakers,trainers", "running,trail,hiking,tennis,basketball,walking,"
       "leather,slip on", "mens,womens,kids,waterproof,lightweight,wide,black,white", 79.0,
       complements="socks,sportswear"),
    _d("socks", "socks,sock pack", "running,wool,ankle,compression,hiking,cotton", "mens,womens,"
       "kids,5 pack,black,thermal", 9.0, consumable=True, complements="shoes"),
    _d("sportswear", "shirt,shorts,leggings,jacket", "running,yoga,gym,cycling,training,outdoor",
       "mens,womens,breathable,slim,black,large,medium", 35.0, complements="shoes,socks"),
    _d("phones", "phone,smartphone", "android,5g,dual sim,compact,camera,budget,foldable",
       "128gb,256gb,black,blue,unlocked,refurbished", 420.0,
       complements="phone accessories"),
    _d("phone accessories", "case,charger,cable,screen protector", "usb c,wireless,magnetic,"
       "fast charging,leather,clear,rugged", "black,2m,iphone,samsung,pack of 2", 15.0,
       complements="phones,laptops"),
    _d("laptops", "laptop,notebook", "gaming,ultrabook,2 in 1,business,student,chromebook",
       "15 inch,13 inch,16gb,ssd,i7,ryzen,oled", 900.0, complements="laptop bags,monitors,"
       "phone accessories"),
    _d("laptop bags", "bag,backpack,sleeve", "laptop,travel,waterproof,leather,rolling",
       "15 inch,13 inch,black,grey,anti theft", 45.0, complements="laptops"),
    _d("monitors", "monitor,screen,display", "4k,gaming,curved,ultrawide,office,portable",
       "27 inch,32 inch,144hz,ips,usb c", 260.0, complements="laptops"),
    _d("cameras", "camera,lens", "mirrorless,dslr,action,instant,vlogging,zoom",
       "4k,body only,kit,wide angle,50mm", 550.0, complements="memory cards"),
    _d("memory cards", "memory card,sd card,usb stick", "micro sd,sdxc,high speed,usb 3",
       "64gb,128gb,256gb,class 10", 18.0, complements="cameras,phones"),
    _d("coffee", "coffee,coffee beans,ground coffee,capsules", "espresso,decaf,dark roast,"
       "arabica,organic,colombian,cold brew", "1kg,500g,fair trade,strong,mild", 14.0,
       consumable=True, complements="coffee machines"),
    _d("coffee machines", "coffee machine,espresso machine,grinder", "bean to cup,pod,"
       "filter,manual,milk frother", "stainless,compact,black,automatic", 230.0,
       complements="coffee"),
    _d("tea", "tea,tea bags,loose leaf tea", "green,black,herbal,chai,matcha,earl grey",
       "organic,100 bags,decaf,loose", 7.0, consumable=True),
    _d("pet food", "dog food,cat food,treats", "dry,wet,grain free,puppy,senior,salmon,"
       "chicken", "2kg,10kg,12 pack,sensitive", 24.0, consumable=True, complements="pet toys"),
    _d("pet toys", "toy,ball,scratcher,chew", "dog,cat,interactive,squeaky,rope,plush",
       "large,small,durable,pack", 11.0, complements="pet food"),
    _d("baby", "diapers,wipes,baby formula", "newborn,size 3,size 4,sensitive,organic,"
       "night", "jumbo pack,fragrance free,90 count", 28.0, consumable=True),
    _d("skincare", "moisturizer,serum,sunscreen,cleanser", "vitamin c,retinol,spf 50,"
       "hyaluronic,oily skin,dry skin", "50ml,fragrance free,vegan,travel size", 19.0,
       consumable=True),
    _d("books", "book,novel,paperback,hardcover", "thriller,fantasy,romance,cookbook,history,"
       "science fiction,biography", "bestseller,new,signed,box set", 16.0),
    _d("toys", "toy,game,puzzle,lego set", "board game,building,educational,outdoor,dolls,"
       "remote control", "age 3,age 8,family,1000 pieces", 32.0),
    _d("kitchen", "pan,knife,blender,pot,air fryer", "non stick,cast iron,stainless steel,"
       "chef,electric,ceramic", "28cm,set,5 litre,dishwasher safe", 55.0,
       complements="coffee machines"),
    _d("home", "lamp,rug,cushion,curtains,shelf", "bedroom,living room,scandinavian,led,"
       "velvet,blackout", "grey,white,large,set of 2", 42.0),
    _d("garden", "hose,seeds,planter,lawn mower,gloves", "vegetable,flower,cordless,"
       "self watering,herb", "10m,pack,large,electric", 27.0),
    _d("tools", "drill,screwdriver,saw,tool set", "cordless,impact,precision,hand,18v",
       "with battery,set,professional,compact", 85.0),
    _d("headphones", "headphones,earbuds,headset", "noise cancelling,wireless,bluetooth,"
       "gaming,sport,over ear", "black,white,usb c,with mic", 120.0,
       complements="phones,phone accessories"),
)
