// The public share page: its only script renders the math the server left as TeX source.
import { renderMath } from "./math.js";

renderMath(document);
