"""Build the bundled sample: UCI Adult rows dressed as a messy customer export.

Every identity in the output is synthetic (drawn from the small lists below with a seeded
numpy Generator); the census features and the income label are Adult's own. The messiness a
real export has (duplicates, missing-value spellings, malformed e-mails and dates, impossible
ages, full-width characters) is planted on purpose, counted and printed, so that the clean,
validate and anonymize stages have something real to do.

Usage (from the repository root):
    python data/sample/build_sample.py                      # both batch files, next to this script
    python data/sample/build_sample.py --rows 1000000 --out /tmp/customers_1m.csv.gz
Pure Python + numpy + pandas; rerunning gives byte-identical files (gzip mtime 0).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20250101
# Ages are "as of" this date: date_of_birth and age agree on it.
REF_DATE = "2025-01-01"
HERE = Path(__file__).resolve().parent
DEFAULT_ADULT_DIR = os.environ.get("ADULT_DIR", "/work/shared/data/adult")

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
IDENTITY_COLUMNS = [
    "customer_id",
    "full_name",
    "email",
    "phone",
    "date_of_birth",
    "street_address",
    "postcode",
    "national_id",
    "notes",
]
COLUMNS = IDENTITY_COLUMNS + ADULT_COLUMNS

# Planted messiness, as a share of the base rows (counts are round(rate * n), so exact).
RATES = {
    "exact_duplicates": 0.01,
    "near_duplicates": 0.005,
    "bad_email": 0.003,
    "bad_date": 0.003,
    "bad_age": 0.001,
    "fullwidth": 0.005,
    "null_label": 0.00015,
}
# Extra missing cells planted per column (Adult's own "?" in workclass, occupation and
# native_country come on top), and the share of Adult's "?" that is re-spelled.
MISSING_RATES = {
    "email": 0.01,
    "phone": 0.015,
    "postcode": 0.01,
    "education": 0.01,
    "marital_status": 0.01,
    "hours_per_week": 0.015,
}
MISSING_SPELLINGS = np.array(["?", "", "NA", "null"], dtype=object)
RESPELL_SHARE = 0.4
RESPELL_SPELLINGS = np.array(["", "NA", "null", "N/A"], dtype=object)
BAD_AGES = np.array(["0", "-3", "151", "430", "999", "7", "120", "200"], dtype=object)

# --- Synthetic identity material -------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


MALE_FIRST = _words(
    "James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel "
    "Matthew Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy "
    "Ronald Edward Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin "
    "Scott Brandon Benjamin Samuel Gregory Frank Alexander Raymond Patrick Jack Dennis Jerry "
    "Carlos Luis Jose Miguel Juan Ahmed Omar Raj Tyrone DeShawn"
)
FEMALE_FIRST = _words(
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy "
    "Betty Margaret Sandra Ashley Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa "
    "Deborah Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Angela Shirley Anna Brenda "
    "Pamela Emma Nicole Helen Samantha Katherine Christine Debra Rachel Carolyn Janet "
    "Catherine Maria Heather Diane Ruth Julie Olivia Sofia Fatima Priya Aaliyah Keisha "
    "Guadalupe"
)
SURNAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter "
    "Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart "
    "Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed "
    "Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray "
    "Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster O'Brien "
    "McDonald Schmidt Muller Kowalski"
)
# (hanzi, pinyin)
CN_SURNAMES = [
    ("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"), ("杨", "Yang"),
    ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"), ("徐", "Xu"), ("孙", "Sun"),
    ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu"), ("郭", "Guo"), ("何", "He"), ("林", "Lin"),
    ("高", "Gao"), ("罗", "Luo"), ("郑", "Zheng"), ("梁", "Liang"), ("谢", "Xie"), ("宋", "Song"),
    ("唐", "Tang"), ("韩", "Han"), ("冯", "Feng"), ("邓", "Deng"), ("曹", "Cao"),
    ("欧阳", "Ouyang"),
]  # fmt: skip
CN_MALE_GIVEN = [
    ("伟", "Wei"), ("强", "Qiang"), ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"), ("勇", "Yong"),
    ("杰", "Jie"), ("涛", "Tao"), ("明", "Ming"), ("超", "Chao"), ("俊杰", "Junjie"),
    ("浩然", "Haoran"), ("子轩", "Zixuan"), ("建华", "Jianhua"), ("志强", "Zhiqiang"),
    ("文博", "Wenbo"), ("宇航", "Yuhang"), ("鹏", "Peng"), ("斌", "Bin"), ("国栋", "Guodong"),
]  # fmt: skip
CN_FEMALE_GIVEN = [
    ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"), ("丽", "Li"), ("艳", "Yan"),
    ("秀英", "Xiuying"), ("桂英", "Guiying"), ("婷", "Ting"), ("雪", "Xue"), ("慧", "Hui"),
    ("玉兰", "Yulan"), ("欣怡", "Xinyi"), ("梓涵", "Zihan"), ("雨萱", "Yuxuan"), ("佳怡", "Jiayi"),
    ("晓燕", "Xiaoyan"), ("丹", "Dan"), ("霞", "Xia"), ("琳", "Lin"),
]  # fmt: skip
EMAIL_DOMAINS = np.array(
    [
        "example.com",
        "example.org",
        "example.net",
        "mail.example.com",
        "inbox.example.org",
        "post.example.net",
    ],
    dtype=object,
)
STREETS = _words(
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Lincoln Jefferson Madison Sunset "
    "Highland Ridge Church Spring Walnut Chestnut Willow River Meadow Forest Franklin Jackson "
    "Adams Union Center Mill Cherry Valley Broad Market Front Bay Harbor Prospect Grove "
    "Summit"
)
STREET_SUFFIXES = ["St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Way", "Pl", "Ter"]
# (city, state, ZIP3 prefix, area codes)
US_CITIES = [
    ("New York", "NY", "100", (212, 646, 917)), ("Brooklyn", "NY", "112", (718, 347)),
    ("Los Angeles", "CA", "900", (213, 323, 310)), ("San Francisco", "CA", "941", (415, 628)),
    ("San Jose", "CA", "951", (408, 669)), ("Chicago", "IL", "606", (312, 773)),
    ("Houston", "TX", "770", (713, 832)), ("Dallas", "TX", "752", (214, 469)),
    ("Austin", "TX", "787", (512, 737)), ("Phoenix", "AZ", "850", (602, 480)),
    ("Philadelphia", "PA", "191", (215, 267)), ("Pittsburgh", "PA", "152", (412,)),
    ("Seattle", "WA", "981", (206, 425)), ("Portland", "OR", "972", (503, 971)),
    ("Denver", "CO", "802", (303, 720)), ("Boston", "MA", "021", (617, 857)),
    ("Atlanta", "GA", "303", (404, 678)), ("Miami", "FL", "331", (305, 786)),
    ("Orlando", "FL", "328", (407, 321)), ("Detroit", "MI", "482", (313,)),
    ("Minneapolis", "MN", "554", (612,)), ("St. Louis", "MO", "631", (314,)),
    ("Nashville", "TN", "372", (615,)), ("Columbus", "OH", "432", (614,)),
    ("Baltimore", "MD", "212", (410, 443)), ("Newark", "NJ", "071", (973, 862)),
    ("Albuquerque", "NM", "871", (505,)), ("Salt Lake City", "UT", "841", (801, 385)),
    ("Las Vegas", "NV", "891", (702, 725)), ("Honolulu", "HI", "968", (808,)),
]  # fmt: skip
# (city hanzi, city pinyin, postcode prefix, [(district hanzi, district pinyin, GB/T 2260 code)])
CN_CITIES = [
    ("北京市", "Beijing", "100", [("朝阳区", "Chaoyang", 110105), ("海淀区", "Haidian", 110108)]),
    ("上海市", "Shanghai", "200", [("黄浦区", "Huangpu", 310101), ("浦东新区", "Pudong", 310115)]),
    ("广州市", "Guangzhou", "510", [("天河区", "Tianhe", 440106), ("越秀区", "Yuexiu", 440104)]),
    ("深圳市", "Shenzhen", "518", [("南山区", "Nanshan", 440305), ("福田区", "Futian", 440304)]),
    ("杭州市", "Hangzhou", "310", [("西湖区", "Xihu", 330106), ("上城区", "Shangcheng", 330102)]),
    ("成都市", "Chengdu", "610", [("锦江区", "Jinjiang", 510104), ("武侯区", "Wuhou", 510107)]),
    ("武汉市", "Wuhan", "430", [("武昌区", "Wuchang", 420106), ("江汉区", "Jianghan", 420103)]),
    ("南京市", "Nanjing", "210", [("玄武区", "Xuanwu", 320102), ("鼓楼区", "Gulou", 320106)]),
    ("西安市", "Xi'an", "710", [("雁塔区", "Yanta", 610113), ("碑林区", "Beilin", 610103)]),
    ("天津市", "Tianjin", "300", [("和平区", "Heping", 120101), ("南开区", "Nankai", 120104)]),
]  # fmt: skip
CN_STREETS = [
    ("人民路", "Renmin Road"), ("中山路", "Zhongshan Road"), ("解放路", "Jiefang Road"),
    ("建国路", "Jianguo Road"), ("长安街", "Chang'an Street"), ("和平路", "Heping Road"),
    ("南京路", "Nanjing Road"), ("科技园路", "Keji Park Road"), ("学院路", "Xueyuan Road"),
    ("滨江大道", "Binjiang Avenue"), ("文化路", "Wenhua Road"), ("东风路", "Dongfeng Road"),
]  # fmt: skip
CN_MOBILE_PREFIXES = np.array(
    [130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156, 157, 158, 159,
     166, 176, 177, 180, 181, 182, 183, 185, 186, 187, 188, 189, 198, 199]
)  # fmt: skip

# --- Notes templates --------------------------------------------------------------------------

PLAIN_EN = np.array(
    [
        "Prefers e-mail contact.",
        "Asked about premium plan.",
        "Renewal due next quarter.",
        "Requested a paper invoice.",
        "Interested in the annual discount.",
        "Complained about delivery delays.",
        "Happy with the last order.",
        "Do not call before 10am.",
        "Wants to upgrade to the family plan.",
        "Payment was late twice this year.",
        "Opted out of marketing e-mails.",
        "Asked for a callback next week.",
        "Moved recently; address updated.",
        "Account reviewed, no action needed.",
        "Requested cancellation, retained with a coupon.",
        "Prefers weekend deliveries.",
        "Reported a billing error, resolved.",
        "VIP customer since 2019.",
        "Uses the mobile app mostly.",
        "Asked how personal data is stored.",
        "Needs wheelchair-accessible appointments.",
        "Speaks Spanish at home.",
        "Interested in the loyalty programme.",
        "Left a 5-star review.",
        "Password reset requested.",
        "Disputed the last charge.",
        "Travelling abroad until next month.",
        "Asked to merge two accounts.",
        "Requested a copy of their data.",
        "Prefers phone contact in the evening.",
    ],
    dtype=object,
)
PLAIN_ZH = np.array(
    [
        "客户希望通过电子邮件联系。",
        "咨询了高级套餐。",
        "下季度需要续约。",
        "要求开具纸质发票。",
        "对上次订单很满意。",
        "投诉配送延迟。",
        "晚上方便接听电话。",
        "已退订营销邮件。",
        "希望升级为家庭套餐。",
        "账单问题已解决。",
        "下周需要回访。",
        "最近搬家，地址已更新。",
        "询问个人数据如何保存。",
        "主要使用手机应用。",
        "要求合并两个账户。",
    ],
    dtype=object,
)
OWN_NAME_EN = ["{} called about billing.", "Spoke with {} today.", "Customer {} confirmed details."]
OWN_EMAIL_EN = ["Confirmed e-mail {}.", "Send invoices to {}.", "Contact via {} only."]
OWN_PHONE_EN = ["Call back on {}.", "Alternate number {}.", "Reachable at {} after 5pm."]
OWN_NAME_ZH = ["{}来电咨询账单问题。", "已与{}确认信息。"]
OWN_EMAIL_ZH = ["邮箱确认为{}。", "发票请发送至{}。"]
OWN_PHONE_ZH = ["请回拨{}。", "备用电话{}。"]
REF_EN = [
    "Referred by {name}.",
    "Referral from {name} ({email}).",
    "Friend {name} can be reached at {phone}.",
    "Also manages the account of {name}.",
    "Was referred by the customer at {email}.",
    "Emergency contact: {phone}.",
]
REF_ZH = ["由{name}推荐。", "推荐人{name}，电话{phone}。", "朋友{name}的邮箱是{email}。"]
CARD_EN = ["Paid with card {}.", "Card on file: {}."]
IBAN_EN = ["Refund to IBAN {}.", "Direct debit from {}."]
IP_EN = ["Logged in from {}.", "Suspicious login from IP {}."]
URL_EN = ["See ticket {}.", "Profile: {}."]
CARD_ZH = ["使用卡号{}付款。"]
IBAN_ZH = ["退款至IBAN {}。"]
IP_ZH = ["登录IP为{}。"]
URL_ZH = ["详见{}。"]

GB11643_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
GB11643_CHECK = "10X98765432"


def resident_id_check(first17: str) -> str:
    """Check character of a Chinese resident ID (GB 11643-1999, ISO 7064 mod 11-2)."""
    s = sum(int(c) * w for c, w in zip(first17, GB11643_WEIGHTS, strict=True))
    return GB11643_CHECK[s % 11]


def luhn_check_digit(payload: str) -> str:
    """Digit that makes payload + digit pass the Luhn check."""
    total = 0
    for i, c in enumerate(reversed(payload)):
        d = int(c)
        if i % 2 == 0:  # these get doubled once the check digit is appended
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits: 98 - (BBAN + country + '00' as numbers) mod 97."""
    rearranged = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{98 - number % 97:02d}"


def to_fullwidth(text: str) -> str:
    """ASCII to its full-width form (NFKC maps it back)."""
    return "".join(
        "\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text
    )


# --- Loading Adult ----------------------------------------------------------------------------


def load_adult(path: str | Path) -> pd.DataFrame:
    """One UCI Adult file as a frame of strings, leading spaces stripped, named like the schema."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    skip = 1 if first.startswith("|") else 0  # adult.test starts with "|1x3 Cross validator"
    frame = pd.read_csv(
        path,
        header=None,
        names=ADULT_COLUMNS,
        skiprows=skip,
        skipinitialspace=True,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=True,
    )
    return frame.astype(object)


# --- The builder ------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, values, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    return arr[rng.integers(0, len(arr), n)]


def _dob(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Birth dates such that the age on REF_DATE (a 1 January) equals `age`."""
    ref_year = int(REF_DATE[:4])
    # Born between 2 Jan of (ref_year - age - 1) and 1 Jan of (ref_year - age), inclusive.
    start = (ref_year - age - 1 - 1970).astype("datetime64[Y]").astype("datetime64[D]") + 1
    end = (ref_year - age - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    span = (end - start).astype(np.int64) + 1
    return start + (rng.random(len(age)) * span).astype(np.int64)


def _names(rng, n, male, chinese):
    """Full names, e-mail local-part bases (first, last in ASCII) and the name form."""
    first = np.where(male, _pick(rng, MALE_FIRST, n), _pick(rng, FEMALE_FIRST, n))
    last = _pick(rng, SURNAMES, n)
    middle = _pick(rng, list("ABCDEFGHJKLMNPRSTW"), n)
    has_middle = rng.random(n) < 0.1
    western = np.where(has_middle, first + " " + middle + ". " + last, first + " " + last)

    sur_i = rng.integers(0, len(CN_SURNAMES), n)
    given_m = rng.integers(0, len(CN_MALE_GIVEN), n)
    given_f = rng.integers(0, len(CN_FEMALE_GIVEN), n)
    sur_hz = np.array([s[0] for s in CN_SURNAMES], dtype=object)[sur_i]
    sur_py = np.array([s[1] for s in CN_SURNAMES], dtype=object)[sur_i]
    g_hz = np.where(
        male,
        np.array([g[0] for g in CN_MALE_GIVEN], dtype=object)[given_m],
        np.array([g[0] for g in CN_FEMALE_GIVEN], dtype=object)[given_f],
    )
    g_py = np.where(
        male,
        np.array([g[1] for g in CN_MALE_GIVEN], dtype=object)[given_m],
        np.array([g[1] for g in CN_FEMALE_GIVEN], dtype=object)[given_f],
    )
    # 0: 王伟, 1: Wang Wei (surname first), 2: Wei Wang (Western order)
    form = rng.choice(3, n, p=[0.45, 0.35, 0.2])
    chinese_name = np.where(
        form == 0, sur_hz + g_hz, np.where(form == 1, sur_py + " " + g_py, g_py + " " + sur_py)
    )
    full = np.where(chinese, chinese_name, western)
    first_ascii = np.where(chinese, g_py, first)
    last_ascii = np.where(chinese, sur_py, last)
    hanzi = chinese & (form == 0)
    return full, first_ascii, last_ascii, hanzi


def _ascii_lower(values: np.ndarray) -> list[str]:
    """Lower-case ASCII letters only (O'Brien -> obrien), computed once per distinct value."""
    table = {v: re.sub("[^a-z]", "", v.lower()) for v in set(values.tolist())}
    return [table[v] for v in values.tolist()]


EMAIL_STYLES = [
    lambda f, la, nn, yy: f"{f}.{la}",
    lambda f, la, nn, yy: f"{f}{la}",
    lambda f, la, nn, yy: f"{f}_{la}",
    lambda f, la, nn, yy: f"{f[:1]}{la}",
    lambda f, la, nn, yy: f"{f}.{la}{nn:02d}",
    lambda f, la, nn, yy: f"{la}{f}{yy:02d}",
    lambda f, la, nn, yy: f"{f[:1]}.{la}{nn:02d}",
]


def _emails(rng, n, first, last, birth_year):
    """E-mail addresses derived from the (pinyin or Western) name at a few example domains."""
    style = rng.integers(0, len(EMAIL_STYLES), n).tolist()
    nn = rng.integers(0, 100, n).tolist()
    domain = _pick(rng, EMAIL_DOMAINS, n).tolist()
    yy = (birth_year % 100).tolist()
    return np.array(
        [
            EMAIL_STYLES[s](f, la, k, y) + "@" + d
            for s, f, la, k, y, d in zip(
                style, _ascii_lower(first), _ascii_lower(last), nn, yy, domain, strict=True
            )
        ],
        dtype=object,
    )


US_FORMATS = ["({}) {:03d}-{:04d}", "{}-{:03d}-{:04d}", "+1 {} {:03d} {:04d}"]
US_ALT_FORMATS = ["{} {:03d} {:04d}", "{}.{:03d}.{:04d}", "{}{:03d}{:04d}"]
CN_FORMATS = ["{}{:04d}{:04d}", "+86 {} {:04d} {:04d}", "{}-{:04d}-{:04d}"]
CN_ALT_FORMATS = ["{} {:04d} {:04d}", "+86{}{:04d}{:04d}", "{}.{:04d}.{:04d}"]


def _phones(rng, n, cn_phone, area):
    """Column phone and a differently formatted rendering of the same number (for notes)."""
    a, b, c = area, rng.integers(200, 1000, n), rng.integers(0, 10000, n)
    pre = CN_MOBILE_PREFIXES[rng.integers(0, len(CN_MOBILE_PREFIXES), n)]
    mid = rng.integers(0, 10000, n)
    end = rng.integers(0, 10000, n)
    p1 = np.where(cn_phone, pre, a)
    p2 = np.where(cn_phone, mid, b)
    p3 = np.where(cn_phone, end, c)
    fmt = rng.integers(0, 3, n)
    alt = rng.integers(0, 3, n)
    col_fmts = [US_FORMATS, CN_FORMATS]
    alt_fmts = [US_ALT_FORMATS, CN_ALT_FORMATS]
    cn = cn_phone.astype(int).tolist()
    parts = (p1.tolist(), p2.tolist(), p3.tolist())
    phone = [
        col_fmts[k][f].format(x, y, z)
        for k, f, x, y, z in zip(cn, fmt.tolist(), *parts, strict=True)
    ]
    phone_alt = [
        alt_fmts[k][f].format(x, y, z)
        for k, f, x, y, z in zip(cn, alt.tolist(), *parts, strict=True)
    ]
    return np.array(phone, dtype=object), np.array(phone_alt, dtype=object)


def _addresses(rng, n, cn_res):
    """Street address, postcode, US area code and Chinese region code per row."""
    city_i = rng.integers(0, len(US_CITIES), n)
    cities = np.array([f"{c}, {s}" for c, s, _, _ in US_CITIES], dtype=object)[city_i]
    zip3 = np.array([z for _, _, z, _ in US_CITIES], dtype=object)[city_i]
    codes = [areas for _, _, _, areas in US_CITIES]
    area_pick = rng.integers(0, 6, n)
    area = np.array([codes[c][k % len(codes[c])] for c, k in zip(city_i, area_pick, strict=True)])
    num = rng.integers(1, 9900, n)
    street = _pick(rng, STREETS, n)
    suffix = _pick(rng, STREET_SUFFIXES, n)
    apt = rng.integers(1, 40, n)
    has_apt = rng.random(n) < 0.2
    us_addr = [
        f"{a} {s} {x}, Apt {p}, {c}" if h else f"{a} {s} {x}, {c}"
        for a, s, x, p, h, c in zip(
            num.tolist(), street, suffix, apt.tolist(), has_apt.tolist(), cities, strict=True
        )
    ]
    us_zip = (
        zip3 + np.array([f"{v:02d}" for v in range(100)], dtype=object)[rng.integers(0, 100, n)]
    )

    districts = [(ci, d) for ci, city in enumerate(CN_CITIES) for d in city[3]]
    d_i = rng.integers(0, len(districts), n)
    d_city = np.array([ci for ci, _ in districts])[d_i]
    d_hz = np.array([d[0] for _, d in districts], dtype=object)[d_i]
    d_py = np.array([d[1] for _, d in districts], dtype=object)[d_i]
    region = np.array([d[2] for _, d in districts])[d_i]
    c_hz = np.array([c[0] for c in CN_CITIES], dtype=object)[d_city]
    c_py = np.array([c[1] for c in CN_CITIES], dtype=object)[d_city]
    c_pc = np.array([c[2] for c in CN_CITIES], dtype=object)[d_city]
    s_i = rng.integers(0, len(CN_STREETS), n)
    s_hz = np.array([s[0] for s in CN_STREETS], dtype=object)[s_i]
    s_py = np.array([s[1] for s in CN_STREETS], dtype=object)[s_i]
    cn_num = rng.integers(1, 999, n)
    room = rng.integers(1, 30, n) * 100 + rng.integers(1, 9, n)
    in_hanzi = rng.random(n) < 0.6
    cn_addr = [
        f"{ch}{dh}{sh}{k}号{r}室" if h else f"No. {k} {sp}, Room {r}, {dp} District, {cp}"
        for ch, dh, sh, k, r, h, sp, dp, cp in zip(
            c_hz, d_hz, s_hz, cn_num.tolist(), room.tolist(), in_hanzi.tolist(), s_py, d_py, c_py,
            strict=True,
        )
    ]  # fmt: skip
    cn_pc = (
        c_pc + np.array([f"{v:03d}" for v in range(1000)], dtype=object)[rng.integers(0, 1000, n)]
    )
    address = np.where(cn_res, np.array(cn_addr, dtype=object), np.array(us_addr, dtype=object))
    postcode = np.where(cn_res, cn_pc, us_zip)
    return address, postcode, area, region


def _national_ids(rng, n, cn_id, dob, male, region):
    """US SSN or an 18-character Chinese resident ID whose birth date is the DOB."""
    area = rng.integers(1, 899, n)
    area = np.where(area == 666, 665, area)  # 000, 666 and 9xx are never issued
    group = rng.integers(1, 100, n)
    serial = rng.integers(1, 10000, n)
    ymd = np.char.replace(np.datetime_as_string(dob, unit="D"), "-", "").astype(np.int64)
    seq = rng.integers(0, 500, n) * 2 + male.astype(np.int64)  # odd 17th digit: male
    first17 = region.astype(np.int64) * 10**11 + ymd * 1000 + seq
    digits = (first17[:, None] // 10 ** np.arange(16, -1, -1, dtype=np.int64)) % 10
    check = np.array(list(GB11643_CHECK), dtype=object)[(digits @ GB11643_WEIGHTS) % 11]
    out = [
        f"{f:017d}{c}" if is_cn else f"{a:03d}-{g:02d}-{s:04d}"
        for is_cn, f, c, a, g, s in zip(
            cn_id.tolist(), first17.tolist(), check, area.tolist(), group.tolist(),
            serial.tolist(), strict=True,
        )
    ]  # fmt: skip
    return np.array(out, dtype=object)


def _card(rng) -> str:
    kind = rng.integers(0, 3)
    if kind == 0:
        payload = "4" + "".join(map(str, rng.integers(0, 10, 14)))
    elif kind == 1:
        payload = f"5{rng.integers(1, 6)}" + "".join(map(str, rng.integers(0, 10, 13)))
    else:
        payload = f"3{rng.choice([4, 7])}" + "".join(map(str, rng.integers(0, 10, 12)))
    number = payload + luhn_check_digit(payload)
    style = rng.integers(0, 3)
    if style == 2:
        return number
    sep = " " if style == 0 else "-"
    if len(number) == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def _iban(rng) -> str:
    country = rng.choice(["DE", "GB", "FR", "NL", "ES"])
    digits = "".join(map(str, rng.integers(0, 10, 24)))
    letters = "".join(chr(65 + v) for v in rng.integers(0, 26, 4))
    bban = {
        "DE": digits[:18],
        "GB": letters + digits[:14],
        "FR": digits[:23],
        "NL": letters + digits[:10],
        "ES": digits[:20],
    }[country]
    iban = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


IP_FIRST_OCTETS = np.array([v for v in range(1, 224) if v not in (10, 127)])


def _ip(rng) -> str:
    first = IP_FIRST_OCTETS[rng.integers(0, len(IP_FIRST_OCTETS))]
    return ".".join(map(str, [first, *rng.integers(0, 256, 3)]))


def _url(rng, handle: str) -> str:
    style = rng.integers(0, 3)
    if style == 0:
        return f"https://support.example.com/tickets/{rng.integers(10000, 99999)}"
    if style == 1:
        return f"https://www.example.org/u/{handle}"
    return f"http://portal.example.net/account?id={rng.integers(100000, 999999)}"


def _notes(rng, n, names, emails, phone_alt, zh, counts):
    """Free-text notes of 1-3 sentences; some hold the row's own or someone else's identifiers."""
    empty = rng.random(n) < 0.03
    own = (rng.random(n) < 0.30) & ~empty
    own_kind = rng.choice(3, n, p=[0.4, 0.3, 0.3])
    ref = (rng.random(n) < 0.10) & ~empty
    other = (np.arange(n) + rng.integers(1, max(n, 2), n)) % n  # a different row
    extra = {k: (rng.random(n) < 0.02) & ~empty for k in ("card", "iban", "ip", "url")}
    n_ids = own.astype(int) + ref + sum(extra.values())
    total = rng.integers(1, 4, n)
    n_plain = np.where(empty, 0, np.maximum(total - n_ids, np.where(n_ids == 0, 1, 0)))
    plain_en = [_pick(rng, PLAIN_EN, n) for _ in range(3)]
    plain_zh = [_pick(rng, PLAIN_ZH, n) for _ in range(3)]
    tmpl_pick = rng.integers(0, 6, n)
    ids_first = rng.random(n) < 0.4

    id_sentences: list[list[str]] = [[] for _ in range(n)]
    for i in np.flatnonzero(own).tolist():
        k = own_kind[i]
        t = tmpl_pick[i]
        if zh[i]:
            tmpl = (OWN_NAME_ZH, OWN_EMAIL_ZH, OWN_PHONE_ZH)[k]
        else:
            tmpl = (OWN_NAME_EN, OWN_EMAIL_EN, OWN_PHONE_EN)[k]
        value = (names, emails, phone_alt)[k][i]
        if value:
            id_sentences[i].append(tmpl[t % len(tmpl)].format(value))
    for i in np.flatnonzero(ref).tolist():
        j = other[i]
        tmpl = REF_ZH if zh[i] else REF_EN
        s = tmpl[tmpl_pick[i] % len(tmpl)]
        id_sentences[i].append(s.format(name=names[j], email=emails[j], phone=phone_alt[j]))
    makers = {
        "card": (_card, CARD_EN, CARD_ZH),
        "iban": (_iban, IBAN_EN, IBAN_ZH),
        "ip": (_ip, IP_EN, IP_ZH),
        "url": (None, URL_EN, URL_ZH),
    }
    for kind, (make, en, zh_t) in makers.items():
        for i in np.flatnonzero(extra[kind]).tolist():
            value = _url(rng, emails[i].split("@")[0]) if make is None else make(rng)
            tmpl = zh_t if zh[i] else en
            id_sentences[i].append(tmpl[tmpl_pick[i] % len(tmpl)].format(value))

    notes = []
    for i in range(n):
        if empty[i]:
            notes.append("")
            continue
        bank = plain_zh if zh[i] else plain_en
        plain = [bank[k][i] for k in range(n_plain[i])]
        parts = id_sentences[i] + plain if ids_first[i] else plain + id_sentences[i]
        notes.append(("" if zh[i] else " ").join(dict.fromkeys(parts)))

    counts["notes_empty"] = int(empty.sum())
    counts["notes_chinese"] = int((zh & ~empty).sum())
    counts["notes_own_identifier"] = int(own.sum())
    counts["notes_other_person"] = int(ref.sum())
    for k, v in extra.items():
        counts[f"notes_{k}"] = int(v.sum())
    return np.array(notes, dtype=object)


def _identities(rng, base: dict[str, np.ndarray], id_offset: int, counts: dict) -> dict:
    n = len(base["age"])
    age = base["age"].astype(np.int64)
    male = base["sex"] == "Male"
    country = base["native_country"]
    race = base["race"]
    # Chinese names follow country of birth where Adult says China/Taiwan/Hong Kong, and are
    # otherwise spread at random (about 15% overall).
    p_cn = np.where(
        np.isin(country, ["China", "Taiwan", "Hong"]),
        0.9,
        np.where(race == "Asian-Pac-Islander", 0.3, 0.145),
    )
    chinese = rng.random(n) < p_cn
    cn_res = chinese & (rng.random(n) < 0.6)  # lives in China: Chinese address, phone, ID
    cn_phone = cn_res | (chinese & (rng.random(n) < 0.15))
    cn_id = cn_res | (chinese & (rng.random(n) < 0.3))

    full, first, last, hanzi = _names(rng, n, male, chinese)
    dob = _dob(rng, age)
    birth_year = dob.astype("datetime64[Y]").astype(np.int64) + 1970
    email = _emails(rng, n, first, last, birth_year)
    address, postcode, area, region = _addresses(rng, n, cn_res)
    phone, phone_alt = _phones(rng, n, cn_phone, area)
    national_id = _national_ids(rng, n, cn_id, dob, male, region)
    zh_notes = chinese & (hanzi | cn_res) & (rng.random(n) < 0.7)
    notes = _notes(rng, n, full, email, phone_alt, zh_notes, counts)
    ids = np.arange(id_offset + 1, id_offset + n + 1)
    counts["chinese_names"] = int(chinese.sum())
    counts["chinese_addresses"] = int(cn_res.sum())
    counts["chinese_resident_ids"] = int(cn_id.sum())
    return {
        "customer_id": np.array([f"C{v:08d}" for v in ids.tolist()], dtype=object),
        "full_name": full,
        "email": email,
        "phone": phone,
        "date_of_birth": np.datetime_as_string(dob, unit="D").astype(object),
        "street_address": address,
        "postcode": postcode,
        "national_id": national_id,
        "notes": notes,
    }


def _bad_email(rng, email: str) -> str:
    local, _, domain = email.partition("@")
    kind = rng.integers(0, 4)
    return [f"{local}@@{domain}", f"{local} at {domain}", f"{local}@", f"{local}{domain}"][kind]


def _bad_date(rng, iso: str) -> str:
    y, m, d = iso.split("-")
    kind = rng.integers(0, 6)
    if kind == 0:
        return f"{d}/{m}/{y}"  # valid, day first
    if kind == 1:
        return f"{d}.{m}.{y}"  # valid, German style
    if kind == 2:
        return f"{m}/{d}/{y}" if int(d) > 12 else f"{y}/{m}/{d}"  # valid, unambiguous
    if kind == 3:
        return f"{rng.choice(['30', '31'])}/02/{y}"  # impossible day
    if kind == 4:
        return f"{y}/13/{d}"  # impossible month
    return f"{y}-{m}-{d}T00:00"  # not a date at all for a strict parser


NEAR_DUP_COLUMNS = ["workclass", "education", "marital_status", "occupation", "race", "sex"]
FULLWIDTH_COLUMNS = ["full_name", "workclass", "sex", "race", "occupation", "relationship"]


def _near_duplicate(rng, row: dict) -> dict:
    row = dict(row)
    changed = False
    if rng.random() < 0.7:
        name = row["full_name"]
        kind = rng.integers(0, 4)
        row["full_name"] = [name.upper(), name.lower(), name.replace(" ", "  ", 1), f" {name} "][
            kind
        ]
        changed = row["full_name"] != name
    for col in rng.choice(NEAR_DUP_COLUMNS, rng.integers(1, 3), replace=False).tolist():
        v = row[col]
        if v in ("?", ""):
            continue
        kind = rng.integers(0, 3)
        # " Private" is how Adult itself writes every value: the builder strips it elsewhere.
        row[col] = [f" {v}", v.lower(), v.upper()][kind]
        changed = changed or row[col] != v
    if not changed:
        row["full_name"] = row["full_name"] + " "
    return row


def _plant_damage(
    rng: np.random.Generator, cols: dict[str, np.ndarray], n: int, counts: dict[str, int]
) -> np.ndarray:
    """Damage cells of disjoint sets of rows, one set per kind (in place; counts recorded);
    returns the rows left clean, in random order."""
    order = rng.permutation(n)
    kinds = ["bad_email", "bad_date", "bad_age", "fullwidth", "null_label"]
    sizes = [round(RATES[k] * n) for k in kinds]
    bounds = np.cumsum([0, *sizes])
    chosen = {k: order[bounds[i] : bounds[i + 1]] for i, k in enumerate(kinds)}

    for i in chosen["bad_email"].tolist():
        cols["email"][i] = _bad_email(rng, cols["email"][i])
    for i in chosen["bad_date"].tolist():
        cols["date_of_birth"][i] = _bad_date(rng, cols["date_of_birth"][i])
    cols["age"][chosen["bad_age"]] = _pick(rng, BAD_AGES, len(chosen["bad_age"]))
    for i in chosen["fullwidth"].tolist():
        col = FULLWIDTH_COLUMNS[rng.integers(0, len(FULLWIDTH_COLUMNS))]
        if cols[col][i] in ("?", "") or not cols[col][i].isascii():
            col = "sex"
        cols[col][i] = to_fullwidth(cols[col][i])
    cols["income"][chosen["null_label"]] = _pick(rng, MISSING_SPELLINGS, len(chosen["null_label"]))
    for k in kinds:
        counts[k] = len(chosen[k])
    return order[bounds[-1] :]


def build_table(
    adult: pd.DataFrame, seed: int, id_offset: int = 0, n_rows: int | None = None
) -> pd.DataFrame:
    """Adult rows with synthetic identities and planted messiness; all cells are strings.

    `n_rows` base records are drawn (Adult's rows in order, then resampled rows with fresh
    identities when larger than the input); planted duplicates come on top. The planted
    counts are in `frame.attrs["planted"]`.
    """
    rng = np.random.default_rng(seed)
    n_src = len(adult)
    n = n_src if n_rows is None else int(n_rows)
    if n <= n_src:
        idx = np.arange(n)
    else:
        idx = np.concatenate([np.arange(n_src), rng.integers(0, n_src, n - n_src)])
    # Adult writes ", ": strip on the (small) source, then take rows as plain object arrays.
    src = {c: np.array([str(v).strip() for v in adult[c]], dtype=object) for c in ADULT_COLUMNS}
    base = {c: v[idx] for c, v in src.items()}
    counts: dict[str, int] = {"base_rows": n}
    cols = _identities(rng, base, id_offset, counts)
    cols.update(base)

    rest = _plant_damage(rng, cols, n, counts)

    # Adult's own "?" partly re-spelled; extra missing cells planted in clean rows only.
    for col in ("workclass", "occupation", "native_country"):
        q = np.flatnonzero(cols[col] == "?")
        respell = q[rng.random(len(q)) < RESPELL_SHARE]
        cols[col][respell] = _pick(rng, RESPELL_SPELLINGS, len(respell))
        counts[f"missing_{col}"] = len(q)
    for col, rate in MISSING_RATES.items():
        hit = rest[rng.random(len(rest)) < rate]
        cols[col][hit] = _pick(rng, MISSING_SPELLINGS, len(hit))
        counts[f"missing_{col}"] = len(hit)

    # Copies inserted at random later positions: exact duplicates and near-duplicates.
    n_exact = round(RATES["exact_duplicates"] * n)
    n_near = round(RATES["near_duplicates"] * n)
    sources = rng.choice(rest, n_exact + n_near, replace=False)
    near_src = sources[n_exact:]
    near = [_near_duplicate(rng, {c: cols[c][i] for c in COLUMNS}) for i in near_src.tolist()]
    # A copy of row s goes just before original row p, drawn from s+1..n (n: the end).
    pos = sources + 1 + np.floor(rng.random(len(sources)) * (n - sources)).astype(np.int64)
    keys = np.concatenate([np.arange(n, dtype=np.float64), pos - 0.5])
    order = np.argsort(keys, kind="stable")
    out_cols = {}
    for c in COLUMNS:
        near_values = np.array([r[c] for r in near], dtype=object)
        out_cols[c] = np.concatenate([cols[c], cols[c][sources[:n_exact]], near_values])[order]
    # Object columns: every cell stays the exact Python str written to the CSV.
    out = pd.DataFrame(out_cols, dtype=object)
    counts["exact_duplicates"] = n_exact
    counts["near_duplicates"] = n_near
    counts["rows_out"] = len(out)
    out.attrs["planted"] = counts
    return out


# --- Writing ----------------------------------------------------------------------------------


def write_csv_gz(frame: pd.DataFrame, path: str | Path, level: int = 9) -> str:
    """Write the frame as gzip'd CSV (mtime 0, no file name): same frame, same bytes."""
    text = frame.to_csv(index=False, lineterminator="\n")
    data = gzip.compress(text.encode("utf-8"), compresslevel=level, mtime=0)
    return _write_atomic(Path(path), [data])


def _write_atomic(path: Path, parts) -> str:
    """Write byte chunks to a temporary name, then rename; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    with tmp.open("wb") as f:
        for part in parts:
            digest.update(part)
            f.write(part)
    tmp.replace(path)
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def _cached_adult(path: str) -> pd.DataFrame:
    return load_adult(path)


def _chunk(job: tuple) -> tuple[bytes, dict]:
    """One chunk of a scaled file: a gzip member of its CSV rows, and its planted counts."""
    adult_path, seed, k, id_offset, rows, level = job
    chunk_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
    frame = build_table(_cached_adult(adult_path), chunk_seed, id_offset=id_offset, n_rows=rows)
    text = frame.to_csv(index=False, header=k == 0, lineterminator="\n")
    return gzip.compress(text.encode("utf-8"), compresslevel=level, mtime=0), frame.attrs["planted"]


def write_scaled(
    adult_path: str | Path,
    rows: int,
    out: str | Path,
    seed: int = SEED,
    chunk_rows: int = 250_000,
    jobs: int | None = None,
) -> tuple[str, dict]:
    """A large file built chunk by chunk in worker processes, written as concatenated gzip
    members (a valid .gz that every reader reads whole). The bytes depend on rows, seed and
    chunk_rows, never on the number of workers; memory stays at a few chunks."""
    starts = list(range(0, rows, chunk_rows))
    tasks = [
        (str(adult_path), seed, k, start, min(chunk_rows, rows - start), 6)
        for k, start in enumerate(starts)
    ]
    totals: dict[str, int] = {}

    def members(results):
        for data, planted in results:
            for key, v in planted.items():
                totals[key] = totals.get(key, 0) + v
            yield data

    workers = min(jobs or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        sha = _write_atomic(Path(out), members(map(_chunk, tasks)))
    else:
        with ProcessPoolExecutor(workers) as pool:
            sha = _write_atomic(Path(out), members(pool.map(_chunk, tasks)))
    return sha, totals


def _report(path: Path, rows: int, planted: dict, sha: str, seconds: float) -> None:
    size = path.stat().st_size
    print(f"{path}: {rows} rows, {size / 1e6:.2f} MB, {seconds:.1f} s, sha256 {sha}")
    for k, v in planted.items():
        print(f"    {k:24s} {v}")


def main(argv: list[str] | None = None) -> int:
    """Write both sample batches (default) or one scaled file (--rows N --out PATH)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adult-dir", default=DEFAULT_ADULT_DIR, help="folder with adult.data/.test")
    ap.add_argument("--rows", type=int, help="base rows of a scaled file (resamples adult.data)")
    ap.add_argument("--out", help="output path of the scaled file (.csv.gz)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--chunk-rows", type=int, default=250_000, help="base rows per chunk")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    ap.add_argument("--out-dir", default=str(HERE), help="where the two batch files go")
    args = ap.parse_args(argv)
    adult_dir = Path(args.adult_dir)

    if args.rows is not None or args.out is not None:
        if args.rows is None or args.out is None:
            ap.error("--rows and --out go together")
        t0 = time.perf_counter()
        sha, planted = write_scaled(
            adult_dir / "adult.data", args.rows, args.out, args.seed, args.chunk_rows, args.jobs
        )
        _report(Path(args.out), planted["rows_out"], planted, sha, time.perf_counter() - t0)
        return 0

    out_dir = Path(args.out_dir)
    batch1 = load_adult(adult_dir / "adult.data")
    batch2 = load_adult(adult_dir / "adult.test")
    # Batch 2's customer ids continue after batch 1's; a different seed gives new people.
    jobs = [
        ("customers_batch1.csv.gz", batch1, args.seed, 0),
        ("customers_batch2.csv.gz", batch2, args.seed + 1, len(batch1)),
    ]
    for name, adult, seed, offset in jobs:
        t0 = time.perf_counter()
        frame = build_table(adult, seed, id_offset=offset)
        sha = write_csv_gz(frame, out_dir / name)
        _report(out_dir / name, len(frame), frame.attrs["planted"], sha, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
