#!/usr/bin/env python3
"""Writes grids.geojson: the Yingfeng street's 1 + 17 + 39 grids.

The polygons are ILLUSTRATIVE: a regular layout over the street's area on
the north bank of the Qiantang river, not the real boundaries. Codes and
names are what a deployment uses; run this again after changing them.
"""
import json

LON0, LON1 = 120.180, 120.230
LAT0, LAT1 = 30.226, 30.262
COLS, ROWS = 6, 3
# South row first (the river bank); None: no community there (the map
# leaves it out, so places there fall to the street, flagged).
COMMUNITIES = [
    ["jiangbin", "nanxing", "yingyi", "qianjiang", "haichao", None],
    ["fuxing", "chaoyang", "yinger", "wangjiang", "jinxiu", "baita"],
    ["zizhu", "fengbei", "songcheng", "chengnan", "fenghuang", "yuhuang"],
]
# Display names, Chinese first. Yingyi (盈一村) and Fengbei (丰北村) are the
# villages of the report; the others are illustrative, like the polygons.
NAMES = {
    "jiangbin": ("江滨社区", "Jiangbin"), "nanxing": ("南兴社区", "Nanxing"),
    "yingyi": ("盈一村", "Yingyi village"), "qianjiang": ("钱江社区", "Qianjiang"),
    "haichao": ("海潮社区", "Haichao"), "fuxing": ("复兴社区", "Fuxing"),
    "chaoyang": ("朝阳社区", "Chaoyang"), "yinger": ("盈二村", "Ying'er village"),
    "wangjiang": ("望江社区", "Wangjiang"), "jinxiu": ("锦绣社区", "Jinxiu"),
    "baita": ("白塔社区", "Baita"), "zizhu": ("紫竹社区", "Zizhu"),
    "fengbei": ("丰北村", "Fengbei village"), "songcheng": ("宋城社区", "Songcheng"),
    "chengnan": ("城南社区", "Chengnan"), "fenghuang": ("凤凰社区", "Fenghuang"),
    "yuhuang": ("玉皇社区", "Yuhuang"),
}
ORDINAL = ["第一网格", "第二网格", "第三网格"]
THREE_SUBGRIDS = {"jiangbin", "yingyi", "haichao", "wangjiang", "songcheng"}


def box(x0, y0, x1, y1):
    r = lambda v: round(v, 6)
    return [[[r(x0), r(y0)], [r(x1), r(y0)], [r(x1), r(y1)], [r(x0), r(y1)], [r(x0), r(y0)]]]


def feature(code, name, name_en, level, ring):
    return {
        "type": "Feature",
        "properties": {"code": code, "name": name, "name_en": name_en, "level": level,
                       "illustrative": True},
        "geometry": {"type": "Polygon", "coordinates": ring},
    }


features = [feature("yingfeng", "盈丰街道", "Yingfeng street", "street", box(LON0, LAT0, LON1, LAT1))]
dx, dy = (LON1 - LON0) / COLS, (LAT1 - LAT0) / ROWS
communities = subgrids = 0
for row, names in enumerate(COMMUNITIES):
    for col, name in enumerate(names):
        if name is None:
            continue
        x0, y0 = LON0 + col * dx, LAT0 + row * dy
        code = f"yingfeng/{name}"
        zh, en = NAMES[name]
        features.append(feature(code, zh, en, "community", box(x0, y0, x0 + dx, y0 + dy)))
        communities += 1
        n = 3 if name in THREE_SUBGRIDS else 2
        for k in range(n):
            features.append(
                feature(f"{code}/{k + 1}", f"{zh}{ORDINAL[k]}", f"{en}, grid {k + 1}", "subgrid",
                        box(x0 + k * dx / n, y0, x0 + (k + 1) * dx / n, y0 + dy)))
            subgrids += 1
assert (communities, subgrids) == (17, 39), (communities, subgrids)
with open("grids.geojson", "w") as f:
    json.dump({"type": "FeatureCollection", "features": features}, f, ensure_ascii=False, indent=1)
print(f"grids.geojson: 1 street, {communities} communities, {subgrids} sub-grids")
